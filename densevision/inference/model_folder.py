"""Self-describing model folders: the model file(s) of ``densevision export`` beside ``densevision.json``.

A folder holds one format's files and the metadata that prediction needs, so it runs without the
checkpoint, the config or Lightning:

=============  =====================================================================
format         files
=============  =====================================================================
onnx           ``model.onnx``
openvino       ``model.xml`` + ``model.bin`` (OpenVINO IR; ``--int8`` adds NNCF's
               ``model_int8.xml`` + ``model_int8.bin``)
safetensors    ``model.safetensors`` (weights only: no pickle; the network is rebuilt
               from the constructor config in the metadata, :func:`load_model`)
torchscript    ``model.pt``
=============  =====================================================================

``densevision.json`` fields: ``format``, ``files`` (name -> sha256: a folder whose files were replaced is
refused), ``task`` (``segmentation``, ``classification``, ``features`` or ``detection``), ``model``
(``class_path`` / ``init_args``, the network's constructor config from the run's hyper-parameters),
``class_names``, ``palette`` (segmentation) or ``category_ids`` (detection), ``preprocessing``
(``mean``, ``std``, ``input_size``, ``sliding_window``), ``input_shape`` (the exported input,
(N, 3, H, W)), ``dynamic_axes``, ``outputs``, ``precision``, ``bf16`` (openvino: ``kept_in_f32``, the
layers that run in f32 within bf16 inference), ``int8`` (with ``--int8``: its file, calibration images,
class agreement, ``kept_in_float``, the layers left out of int8, and for segmentation runs ``validation``,
float32's and int8's mIoU on the run's validation split), ``densevision_version``, ``checkpoint``
(file name and ``sha256``) and ``verification`` (the exported outputs against PyTorch's).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densevision.inference.preprocessing import Preprocessing

if TYPE_CHECKING:  # torch is imported where a network is built: reading a folder's metadata needs none
    from torch import nn

METADATA_FILE = "densevision.json"
FORMAT_FILES: dict[str, tuple[str, ...]] = {
    "onnx": ("model.onnx",),
    "openvino": ("model.xml", "model.bin"),
    "safetensors": ("model.safetensors",),
    "torchscript": ("model.pt",),
}
# written beside model.xml by ``--int8`` (``densevision.inference.quantize``), run with precision int8
OPTIONAL_FILES = {"openvino": ("model_int8.xml", "model_int8.bin")}
# which runtime runs which format (OpenVINO reads ONNX files too)
BACKEND_FORMATS = {"torch": ("safetensors",), "onnxruntime": ("onnx",), "openvino": ("openvino", "onnx")}
TASKS = ("segmentation", "classification", "features", "detection")
# the packages a folder's model config may name (as densevision.tasks.checkpoints.TRUSTED_PREFIXES)
TRUSTED_PREFIXES = ("densevision.", "torch.", "torchvision.")


class ModelFolderError(ValueError):
    """A model folder is missing, corrupt, or does not match its ``densevision.json``."""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_metadata(folder: Path, metadata: Mapping[str, Any]) -> Path:
    """Write ``densevision.json`` with the sha256 of the format's files added under ``files``."""
    names = FORMAT_FILES[metadata["format"]] + OPTIONAL_FILES.get(metadata["format"], ())
    files = {name: sha256(folder / name) for name in names if (folder / name).is_file()}
    path = folder / METADATA_FILE
    path.write_text(json.dumps({**metadata, "files": files}, indent=1))
    return path


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The checked ``densevision.json`` of ``folder``.

    Raises:
        ModelFolderError: no such folder or metadata, unreadable JSON, an unknown format or task, a model
            file missing, or one whose sha256 differs from the metadata's (replaced or truncated); each
            message names the folder and the fix.
    """
    folder = Path(folder)
    path = folder / METADATA_FILE
    if not path.is_file():
        what = "is not a folder" if not folder.is_dir() else f"has no {METADATA_FILE}"
        raise ModelFolderError(
            f"{folder} {what}: --model takes a folder written by `densevision export --checkpoint RUN.ckpt`"
        )
    try:
        metadata = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFolderError(f"{path} is not valid JSON ({err}); export the model again") from err
    if not isinstance(metadata, dict):
        raise ModelFolderError(f"{path} holds {type(metadata).__name__}, expected an object; export again")
    fmt, task = metadata.get("format"), metadata.get("task")
    if fmt not in FORMAT_FILES or task not in TASKS:
        raise ModelFolderError(
            f"{path}: format {fmt!r} / task {task!r} not understood (formats {list(FORMAT_FILES)}, tasks "
            f"{list(TASKS)}); export the model again with this densevision"
        )
    hashes = metadata.get("files") or {}
    for name in dict.fromkeys([*FORMAT_FILES[fmt], *hashes]):
        file = folder / name
        if not file.is_file():
            raise ModelFolderError(f"{folder}: {fmt} model file {name} is missing; export the model again")
        if hashes.get(name) != sha256(file):
            raise ModelFolderError(
                f"{file} does not match {METADATA_FILE} (sha256 differs: the file was replaced, truncated or "
                "belongs to another export); export the model again into an empty folder"
            )
    return metadata


def check_backend(folder: Path, metadata: Mapping[str, Any], backend: str) -> None:
    """Refuse a backend that does not run the folder's format, naming those that do.

    Raises:
        ModelFolderError: ``backend`` cannot run this format.
    """
    fmt = metadata["format"]
    if fmt not in BACKEND_FORMATS.get(backend, ()):
        works = [name for name, formats in BACKEND_FORMATS.items() if fmt in formats]
        raise ModelFolderError(
            f"{folder} holds a {fmt} model, which --backend {backend} does not run; use --backend "
            f"{' or '.join(works) or 'torch'} (or export with --format {BACKEND_FORMATS[backend][0]})"
        )


def preprocessing_of(metadata: Mapping[str, Any]) -> Preprocessing:
    """The folder's :class:`Preprocessing` (defaults where the metadata has no value)."""
    return Preprocessing.from_dict(metadata.get("preprocessing") or {})


def _class_paths(config: object) -> Iterator[object]:
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key in ("class_path", "_class_path"):
                yield value
            else:
                yield from _class_paths(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            yield from _class_paths(value)


def build_model(config: Mapping[str, Any], where: str = "model") -> nn.Module:
    """The network of a ``class_path`` / ``init_args`` config (as in the YAML configs), through
    jsonargparse as LightningCLI builds it, after checking every class_path lies in a trusted package.

    Raises:
        ModelFolderError: a class_path outside ``TRUSTED_PREFIXES``, or a config that does not build.
    """
    from jsonargparse import ArgumentParser
    from torch import nn

    for class_path in _class_paths(config):
        if not isinstance(class_path, str) or not class_path.startswith(TRUSTED_PREFIXES):
            raise ModelFolderError(
                f"{where}: class_path {class_path!r} is outside {list(TRUSTED_PREFIXES)}; refusing to "
                "import it (a model folder could otherwise run any code)"
            )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=nn.Module)
    try:
        return parser.instantiate(parser.parse_object({"model": dict(config)})).model
    except Exception as err:  # jsonargparse reports bad configs with several exception types
        raise ModelFolderError(f"{where}: cannot build {config.get('class_path')!r}: {err}") from err


def load_model(folder: str | Path) -> nn.Module:
    """Rebuild the network of a ``--format safetensors`` folder, without Lightning or pickle.

    Args:
        folder: written by ``densevision export --checkpoint RUN.ckpt --format safetensors``.

    Returns:
        The ``nn.Module`` in eval mode, its weights loaded strictly. Prediction metadata (class names,
        preprocessing...) is in ``read_metadata(folder)``.

    Raises:
        ModelFolderError: not a safetensors folder, a corrupt or mismatched folder, or weights that do not
            fit the rebuilt network.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    metadata = read_metadata(folder)
    if metadata["format"] != "safetensors":
        raise ModelFolderError(
            f"{folder} holds a {metadata['format']} model; load_model rebuilds PyTorch modules from "
            "--format safetensors folders (run this one with densevision predict --model --backend "
            f"{'openvino' if metadata['format'] == 'openvino' else 'onnxruntime'})"
        )
    model = build_model(metadata.get("model") or {}, f"{folder / METADATA_FILE} model")
    state = load_file(folder / "model.safetensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFolderError(
            f"{folder}/model.safetensors does not fit the model in its metadata: {err}"
        ) from err
    return model.eval()

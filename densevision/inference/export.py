"""ONNX and TorchScript files of a model, each verified against PyTorch (``densevision export``).

Kinds of model and what their exports take and return:

- backbone (``--features-only``): image ``(N, 3, H, W)`` -> one output per feature, named ``c1``..``c5``
  (or the stride-1 ``c0`` ... of CIFAR / FC-DenseNet stems), in high-to-low resolution order;
- segmentation model or classifier: image ``(N, 3, H, W)`` -> ``logits`` ``(N, C, H, W)`` or ``(N, C)``;
- detector (torchvision Faster / Mask R-CNN, RetinaNet, FCOS): one image ``(3, H, W)`` in [0, 1] ->
  ``boxes`` ``(K, 4)``, ``labels`` ``(K,)``, ``scores`` ``(K,)`` [, ``masks`` ``(K, 1, H, W)``]; the batch
  is one image (torchvision's ONNX support is per image).

ONNX uses torch's TorchScript-based exporter (``dynamo=False``, opset 17 by default, >= 11 for detectors):
it handles torchvision detectors and dynamic axes, and is much faster than the dynamo exporter on these
models (README, "Export").

TorchScript uses ``torch.jit.trace`` (the backbone's forward picks its stages with Python-level control
flow, which tracing unrolls), except for detectors, which are first tried with ``torch.jit.script``; when
scripting fails the reason is printed and they are traced instead.

Verification: each file is loaded (onnxruntime / ``torch.jit.load``) and run on the export sample and,
with ``--dynamic``, on a second batch and image size; every output must satisfy
``max|exported - pytorch| <= atol + rtol * max|pytorch|`` with ``atol = 1e-4``, ``rtol = 1e-3`` (float32).
Detections must also agree in number.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from densevision.inference.model_folder import METADATA_FILE, build_model, sha256, write_metadata
from densevision.inference.preprocessing import Preprocessing
from densevision.models.kinds import model_kind
from densevision.visualize import default_palette

ATOL, RTOL = 1e-4, 1e-3
DETECTION_OUTPUTS = ("boxes", "labels", "scores", "masks")


class ExportWrapper(nn.Module):
    """``model`` with a flat tuple of tensors as output, the form ONNX and tracing need."""

    def __init__(self, model: nn.Module, kind: str, output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.output_names = tuple(output_names)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Backbone / dense: (N, 3, H, W); detection: (3, H, W). -> outputs in ``output_names`` order."""
        if self.kind == "detection":
            detection = self.model([x])[0]
            return tuple(detection[name] for name in self.output_names)
        out = self.model(x)
        return tuple(out.values()) if isinstance(out, dict) else (out,)


@dataclass
class Comparison:
    """One verification run of an exported file against PyTorch."""

    file: Path
    input_shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_ref: float
    counts_match: bool = True

    @property
    def ok(self) -> bool:
        return self.counts_match and self.max_abs_diff <= ATOL + RTOL * self.max_abs_ref

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        counts = "" if self.counts_match else " (output sizes differ)"
        return (
            f"  {verdict:8} {self.file.name} input {self.input_shape}: max |diff| {self.max_abs_diff:.2e}, "
            f"max |pytorch| {self.max_abs_ref:.2e}, tolerance {ATOL:g} + {RTOL:g} * max{counts}"
        )


def compare(file: Path, x: Tensor, exported: Sequence[Tensor], reference: Sequence[Tensor]) -> Comparison:
    """Element-wise comparison of each exported output with PyTorch's (sizes must agree)."""
    diff, ref_max, counts = 0.0, 0.0, len(exported) == len(reference)
    for got, want in zip(exported, reference, strict=False):
        got, want = torch.as_tensor(got).float(), want.float()
        if got.shape != want.shape:
            counts = False
            continue
        if want.numel():
            diff = max(diff, float((got - want).abs().max()))
            ref_max = max(ref_max, float(want.abs().max()))
    return Comparison(file, tuple(x.shape), diff, ref_max, counts)


def output_names(model: nn.Module, kind: str, sample: Tensor) -> list[str]:
    """Names of the exported outputs (feature names, ``logits`` or the detection fields present)."""
    if kind == "backbone":
        return [spec.name for spec in model.feature_info]
    if kind == "dense":
        return ["logits"]
    with torch.no_grad():
        keys = model([sample])[0].keys()
    return [name for name in DETECTION_OUTPUTS if name in keys]


def sample_inputs(kind: str, batch: int, size: Sequence[int], dynamic: bool) -> list[Tensor]:
    """The export sample, and with ``dynamic`` a second one with another batch and image size."""
    gen = torch.Generator().manual_seed(0)

    def image(n: int, h: int, w: int) -> Tensor:
        if kind == "detection":
            return torch.rand(3, h, w, generator=gen)
        return torch.randn(n, 3, h, w, generator=gen)

    h, w = size
    samples = [image(batch, h, w)]
    if dynamic:
        samples.append(image(batch + 1, h + h // 2, w + w // 4))
    return samples


def export_onnx(wrapper: ExportWrapper, sample: Tensor, path: Path, *, dynamic: bool, opset: int) -> None:
    """Write ``wrapper`` as ONNX; with ``dynamic``, batch (not for detectors), height and width are free."""
    axes: dict[str, dict[int, str]] = {}
    if dynamic:
        image_axes = (
            {1: "height", 2: "width"}
            if wrapper.kind == "detection"
            else {0: "batch", 2: "height", 3: "width"}
        )
        axes["image"] = image_axes
        for name in wrapper.output_names:
            axes[name] = {0: "detections"} if wrapper.kind == "detection" else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-level shape checks
        torch.onnx.export(
            wrapper,
            (sample,),
            str(path),
            input_names=["image"],
            output_names=list(wrapper.output_names),
            dynamic_axes=axes or None,
            opset_version=opset,
            dynamo=False,
        )


def onnx_runner(path: Path) -> Callable[[Tensor], list[Tensor]]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # its failures reach the user as exceptions, once, not also as logs
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: [torch.from_numpy(out) for out in session.run(None, {"image": x.numpy()})]


def export_torchscript(wrapper: ExportWrapper, sample: Tensor, path: Path) -> tuple[str, str | None]:
    """Write TorchScript; -> (``"script"`` or ``"trace"``, why scripting failed or None)."""
    reason = None
    if wrapper.kind == "detection":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice
                torch.jit.save(torch.jit.script(wrapper.model), str(path))
            return "script", None
        except Exception as err:  # the scripting compiler raises many types
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = f"{type(err).__name__}: " + " ".join(lines[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (sample,), strict=False, check_trace=False)
        torch.jit.save(traced, str(path))
    return "trace", reason


def torchscript_runner(path: Path, wrapper: ExportWrapper, how: str) -> Callable[[Tensor], list[Tensor]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path))
    if how == "script":  # a scripted torchvision detector returns (losses, detections)
        return lambda x: [loaded([x])[1][0][name] for name in wrapper.output_names]
    return lambda x: list(loaded(x))


def verify(
    path: Path, run: Callable[[Tensor], list[Tensor]], wrapper: ExportWrapper, samples: Sequence[Tensor]
) -> list[Comparison]:
    with torch.no_grad():
        return [compare(path, x, run(x), wrapper(x)) for x in samples]


def export_model(
    model: nn.Module,
    output: Path,
    *,
    name: str,
    formats: Sequence[str] = ("onnx", "torchscript"),
    input_size: Sequence[int] = (224, 224),
    batch_size: int = 1,
    dynamic: bool = False,
    opset: int = 17,
    log: Callable[[str], None] = print,
) -> list[Comparison]:
    """Export ``model`` to ``output/<name>.onnx`` / ``.pt`` and verify each file; -> the comparisons."""
    model = model.eval()
    kind = model_kind(model)
    samples = sample_inputs(kind, batch_size, input_size, dynamic)
    if kind == "detection":
        opset = max(opset, 11)
        if dynamic:
            log("note: detectors export one image per call; only height and width are dynamic")
    wrapper = ExportWrapper(model, kind, output_names(model, kind, samples[0])).eval()
    output.mkdir(parents=True, exist_ok=True)
    results: list[Comparison] = []
    if "onnx" in formats:
        path = output / f"{name}.onnx"
        export_onnx(wrapper, samples[0], path, dynamic=dynamic, opset=opset)
        log(f"ONNX ({kind}, opset {opset}, outputs {list(wrapper.output_names)}): {path}")
        results += _report(verify(path, onnx_runner(path), wrapper, samples), log)
    if "torchscript" in formats:
        path = output / f"{name}.pt"
        how, reason = export_torchscript(wrapper, samples[0], path)
        if reason:
            log(f"torch.jit.script failed ({reason}); traced instead")
        log(f"TorchScript ({how}): {path}")
        results += _report(verify(path, torchscript_runner(path, wrapper, how), wrapper, samples), log)
    return results


def _report(comparisons: list[Comparison], log: Callable[[str], None]) -> list[Comparison]:
    for comparison in comparisons:
        log(str(comparison))
    return comparisons


FOLDER_FORMATS = ("onnx", "openvino", "safetensors", "torchscript")
INT8_MIN_AGREEMENT = 0.995  # the pixel agreement int8 should keep (issue goal; below it the export warns)


class ExportError(ValueError):
    """An export that cannot be done as asked, or that failed its verification (nothing is left behind)."""


def comparison_record(comparison: Comparison) -> dict:
    """A :class:`Comparison` as JSON-ready figures for ``densevision.json``."""
    return {
        "input_shape": list(comparison.input_shape),
        "max_abs_diff": comparison.max_abs_diff,
        "max_abs_ref": comparison.max_abs_ref,
        "tolerance": f"{ATOL:g} + {RTOL:g} * max|pytorch|",
        "ok": comparison.ok,
    }


def _dense_samples(size: Sequence[int], dynamic: bool) -> list[Tensor]:
    """Batch 1 and 2 at ``size`` (the batch axis is always free) and, with ``dynamic``, another size."""
    gen = torch.Generator().manual_seed(0)
    h, w = size
    samples = [torch.randn(1, 3, h, w, generator=gen), torch.randn(2, 3, h, w, generator=gen)]
    if dynamic:
        samples.append(torch.randn(1, 3, h + h // 2, w + w // 4, generator=gen))
    return samples


def _export_dense_onnx(wrapper: ExportWrapper, sample: Tensor, path: Path, dynamic: bool, opset: int) -> None:
    image_axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    axes = {"image": image_axes, **{name: {0: "batch"} for name in wrapper.output_names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-level shape checks
        torch.onnx.export(wrapper, (sample,), str(path), input_names=["image"],
                          output_names=list(wrapper.output_names), dynamic_axes=axes, opset_version=opset,
                          dynamo=False)  # fmt: skip


def _openvino_runner(xml: Path) -> Callable[[Tensor], list[Tensor]]:
    import openvino

    compiled = openvino.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: [torch.from_numpy(o.copy()) for o in compiled(x.numpy()).to_tuple()]


def _verify_dynamic(
    path: Path, run: Callable[[Tensor], list[Tensor]], wrapper: ExportWrapper, samples: Sequence[Tensor],
    name: str,
) -> list[Comparison]:  # fmt: skip
    """Verify on every sample; a dynamic export that fails at the second size is refused with the sizes
    that work (e.g. FC-DenseNet's skip concatenation where the down and up paths' sizes differ)."""
    results = verify(path, run, wrapper, samples[:2])
    if len(samples) < 3:
        return results
    h, w = samples[0].shape[-2:]
    x = samples[2]
    try:
        results += verify(path, run, wrapper, [x])
        if results[-1].ok:
            return results
        reason = "outputs differ from PyTorch's"
    except Exception as err:  # the runtimes raise their own exception types
        reason = str(err).splitlines()[0].split("Status Message:")[-1].strip()[:160]
    for multiple in (8, 16, 32, 64, 128):
        ph, pw = (multiple * -(-(v + v // k) // multiple) for v, k in ((h, 2), (w, 4)))  # rounded up
        probe = torch.randn(1, 3, ph, pw)
        try:
            if all(c.ok for c in verify(path, run, wrapper, [probe])):
                works = f"works at sizes that are multiples of {multiple} (e.g. {ph}x{pw})"
                break
        except Exception:  # noqa: S112 - a failing probe size: try the next multiple
            continue
    else:
        works = f"works only at the export size {h}x{w}"
    stride = _down_path_stride(wrapper.model)
    if stride and (h % stride or w % stride):
        # traced where no skip needs cropping, the up path follows the skips' sizes at every input size
        rh, rw = (stride * -(-v // stride) for v in (h, w))
        works += (f"; traced at a size divisible by {stride}, what its down path needs, it takes any size: "
                  f"add --input-size {rh} {rw} to --dynamic, or")  # fmt: skip
    else:
        works += ":"
    raise ExportError(
        f"--dynamic: {name} exported with a free image size fails at {x.shape[2]}x{x.shape[3]} ({reason}); "
        f"it {works} export without --dynamic (prediction resizes images to the run's size)"
    )


def _down_path_stride(model: nn.Module) -> int | None:
    """The largest stride of an encoder-decoder's encoder features (``encoder.feature_info``), or None."""
    specs = getattr(getattr(model, "encoder", None), "feature_info", None)
    return max((spec.stride for spec in specs), default=None) if specs else None


def export_folder(
    model: nn.Module,
    output: Path,
    *,
    fmt: str,
    metadata: dict,
    input_size: Sequence[int],
    dynamic: bool = False,
    opset: int = 17,
    calibration: Sequence | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> list[Comparison]:
    """Export ``model`` as a self-describing folder (``densevision.inference.model_folder``) and verify it.

    Everything is written into a temporary folder beside ``output`` and moved to ``output`` only when the
    verification passed: a failed export leaves nothing behind.

    Args:
        model: the network, in eval mode (segmentation / classifier: (N, 3, H, W) -> logits; features:
            -> feature dict; detector: one (3, H, W) image).
        output: the folder to create.
        fmt: ``onnx``, ``openvino`` (the ONNX file through ``openvino.convert_model`` / ``save_model``),
            ``safetensors`` or ``torchscript``.
        metadata: the run's fields of ``densevision.json`` (task, model config, class names, palette or
            category ids, preprocessing, checkpoint); the export adds format, shapes and verification.
        input_size: (H, W) of the exported input (the run's input size or window).
        dynamic: free height and width too (the batch axis is always free, detectors take one image).
        opset: ONNX opset (>= 11 for detectors).
        calibration: with ``openvino``: preprocessed (1, 3, H, W) float32 images for NNCF int8
            (``densevision.inference.quantize.quantize_openvino_int8``); None = float32.
        overwrite: replace an existing ``output``.

    Raises:
        ExportError: a format the model cannot take, an ``output`` that exists, or a failed verification.
    """
    if fmt not in FOLDER_FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FOLDER_FORMATS)}")
    kind = model_kind(model.eval())
    name = metadata.get("model", {}).get("class_path", type(model).__name__).rsplit(".", 1)[-1]
    if kind == "detection" and fmt == "openvino":
        raise ExportError(
            f"{name} is a torchvision detector, which this OpenVINO export does not convert; use "
            "--format onnx (ONNX Runtime) or --format safetensors (PyTorch)"
        )
    if calibration is not None and fmt != "openvino":
        raise ExportError("--int8 quantises OpenVINO models: add --format openvino")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ExportError(
            f"--output {output} is not empty; choose a new folder or add --overwrite to replace it"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        results, extra = _export_into(
            model, kind, tmp, fmt, name, input_size, dynamic, opset, calibration, log, metadata.get("model")
        )
        failed = [r for r in results if not r.ok]
        if failed:
            raise ExportError(
                f"{name} as {fmt}: {len(failed)}/{len(results)} verifications outside tolerance "
                f"({failed[0]}); nothing was written to {output}"
            )
        write_metadata(tmp, {
            **metadata, **extra, "format": fmt, "densevision_version": _version(),
            "dynamic_axes": ["batch", "height", "width"] if dynamic else ["batch"],
            "verification": [comparison_record(r) for r in results] + extra.get("verification", []),
        })  # fmt: skip
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {output} ({fmt}, {METADATA_FILE} beside the model)")
    return results


def _version() -> str:
    from densevision import __version__

    return __version__


def _export_into(
    model: nn.Module, kind: str, folder: Path, fmt: str, name: str, size: Sequence[int], dynamic: bool,
    opset: int, calibration: Sequence | None, log: Callable[[str], None], config: dict | None,
) -> tuple[list[Comparison], dict]:  # fmt: skip
    """Write ``fmt``'s files into ``folder``; -> (verifications, extra metadata)."""
    if kind == "detection":
        samples = [torch.rand(3, *size, generator=torch.Generator().manual_seed(0))]
        opset = max(opset, 11)
    else:
        samples = _dense_samples(size, dynamic)
    wrapper = ExportWrapper(model, kind, output_names(model, kind, samples[0])).eval()
    with torch.no_grad():
        first = wrapper(samples[0])[0]
    task = {"detection": "detection", "backbone": "features"}.get(kind)
    extra: dict = {"task": task or ("segmentation" if first.dim() == 4 else "classification"),
                   "outputs": list(wrapper.output_names), "precision": "f32",
                   "input_shape": list(samples[0].shape)}  # fmt: skip
    if fmt == "safetensors":
        from safetensors.torch import save_file

        # clones: safetensors refuses tensors that share memory (tied weights); the keys stay the same
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  str(folder / "model.safetensors"))  # fmt: skip
        if not config:
            raise ExportError(
                f"--format safetensors needs {name}'s constructor config (class_path / init_args), which "
                "only a fit run's checkpoint holds: export with --checkpoint RUN.ckpt"
            )
        rebuilt = build_model(config, name)  # what load_model will do: rebuild, then load strictly
        rebuilt.load_state_dict(_load_safetensors(folder / "model.safetensors"), strict=True)
        rebuilt_wrapper = ExportWrapper(rebuilt.eval(), kind, wrapper.output_names)
        results = verify(folder / "model.safetensors", lambda x: list(rebuilt_wrapper(x)), wrapper, samples)
    elif fmt == "torchscript":
        how, reason = export_torchscript(wrapper, samples[0], folder / "model.pt")
        if reason:
            log(f"torch.jit.script failed ({reason}); traced instead")
        results = verify(folder / "model.pt", torchscript_runner(folder / "model.pt", wrapper, how), wrapper,
                         samples)  # fmt: skip
    else:
        onnx_path = folder / "model.onnx"
        if kind == "detection":
            export_onnx(wrapper, samples[0], onnx_path, dynamic=dynamic, opset=opset)
        else:
            _export_dense_onnx(wrapper, samples[0], onnx_path, dynamic, opset)
        log(f"ONNX ({kind}, opset {opset}, outputs {list(wrapper.output_names)})")
        if fmt == "onnx":
            results = _verify_dynamic(onnx_path, onnx_runner(onnx_path), wrapper, samples, name)
        else:
            results, extra2 = _to_openvino(onnx_path, folder, wrapper, samples, name, calibration, log)
            extra.update(extra2)
    if kind == "detection" and not any(r.max_abs_ref > 0 for r in results):
        note = (f"{name} made no detection on the verification image ({size[0]}x{size[1]}): the check proved "
                "only that the file runs; verify on real images (densevision predict)")  # fmt: skip
        log(f"warning: {note}")
        extra["verification_note"] = note
    for r in results:
        log(str(r))
    return results, extra


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _to_openvino(
    onnx_path: Path, folder: Path, wrapper: ExportWrapper, samples: Sequence[Tensor], name: str,
    calibration: Sequence | None, log: Callable[[str], None],
) -> tuple[list[Comparison], dict]:  # fmt: skip
    """ONNX -> OpenVINO IR (``model.xml`` + ``model.bin``, float32 weights) and, with ``calibration``,
    NNCF's int8 IR beside it (``model_int8.xml`` + ``.bin``, run with precision ``int8``)."""
    try:
        import openvino
    except ImportError as err:
        raise ExportError("--format openvino needs openvino: pip install densevision[deploy]") from err
    from densevision.inference.quantize import input_layers, keep_in_full_precision

    xml = folder / "model.xml"
    ov_model = openvino.convert_model(str(onnx_path))
    # the stem moves a network's decisions most in bf16 (the image rounded to 8 significant bits) and
    # costs little in f32: the CPU plugin runs the marked layers in f32 within bf16 inference
    kept = keep_in_full_precision(ov_model, input_layers(ov_model))
    openvino.save_model(ov_model, str(xml), compress_to_fp16=False)
    onnx_path.unlink()
    results = _verify_dynamic(xml, _openvino_runner(xml), wrapper, samples, name)
    extra: dict = {"bf16": {"kept_in_f32": kept}}
    if calibration is None:
        return results, extra
    try:
        from densevision.inference.quantize import quantize_openvino_int8
    except ImportError as err:
        raise ExportError(
            "--int8 needs densevision.inference.quantize and nncf: pip install densevision[deploy]"
        ) from err
    from densevision.inference.backends import openvino_backend

    kept_in_float = quantize_openvino_int8(xml, calibration, folder / "model_int8.xml",
                                           subset_size=len(calibration), keep_float=kept)  # fmt: skip
    run = openvino_backend(folder / "model_int8.xml", precision="int8")  # as prediction runs it
    with torch.no_grad():
        same = [float((torch.from_numpy(run(x)).argmax(1) == wrapper(torch.from_numpy(x))[0].argmax(1))
                      .float().mean()) for x in calibration]  # fmt: skip
    agreement_int8 = sum(same) / len(same)
    log(f"int8 vs PyTorch float32 on the {len(same)} calibration images: {agreement_int8:.2%} of "
        "pixels (or images) get the same class")  # fmt: skip
    if agreement_int8 < INT8_MIN_AGREEMENT:
        log(f"warning: int8 keeps only {agreement_int8:.2%} agreement (< {INT8_MIN_AGREEMENT:.1%})")
    # float32 verification of the file before quantisation stands; int8 is judged by its class agreement
    extra["int8"] = {"file": "model_int8.xml", "calibration_images": len(calibration),
                     "class_agreement": agreement_int8, "kept_in_float": kept_in_float}
    return results, extra


def run_metadata(task: nn.Module, hyper_parameters: dict, checkpoint: Path) -> dict:
    """The fields of ``densevision.json`` a fit run gives: its model config, labels, colours, category ids,
    preprocessing (``task.preprocessing``, or defaults for runs saved before it existed) and the hash of
    the checkpoint."""
    model = task.model
    preprocessing = getattr(task, "preprocessing", None) or Preprocessing.from_hparams(hyper_parameters)
    metadata = {
        "task": "detection" if model_kind(model) == "detection" else "segmentation",
        "model": hyper_parameters.get("model"),
        "num_classes": getattr(task, "num_classes", None),
        "ignore_index": getattr(task, "ignore_index", None),
        "class_names": getattr(task, "class_names", None),
        "palette": None,
        "category_ids": getattr(task, "category_ids", None),
        "preprocessing": preprocessing.to_dict(),
        "checkpoint": {"file": Path(checkpoint).name, "sha256": sha256(Path(checkpoint))},
    }
    if metadata["task"] == "segmentation" and metadata["num_classes"]:
        colors = getattr(task, "palette", None) or default_palette(int(metadata["num_classes"]))
        metadata["palette"] = [[int(v) for v in c] for c in colors]
    if metadata["task"] == "detection":
        transform = model.transform  # torchvision's detectors resize and normalise inside the model
        metadata["preprocessing"] = {
            "min_size": list(transform.min_size), "max_size": transform.max_size,
            "mean": list(transform.image_mean), "std": list(transform.image_std), "inside_model": True,
        }  # fmt: skip
    return metadata


def export_size(metadata: dict, model: nn.Module, input_size: Sequence[int] | None, dynamic: bool) -> tuple:
    """(H, W) of the exported input: the network's input of the run (its sliding window, else its input
    size; a detector's ``min_size``), or ``input_size`` where the run has none.

    Raises:
        ExportError: no size known, or ``input_size`` differs from the run's without ``dynamic`` (the file
            would refuse what prediction feeds it).
    """
    pre = metadata.get("preprocessing") or {}
    if metadata["task"] == "detection":
        run_size = (pre["min_size"][0],) * 2
    else:
        window = (pre.get("sliding_window") or {}).get("window_size")
        window = (window, window) if isinstance(window, int) else window
        run_size = tuple(window or pre.get("input_size") or ()) or None
    if input_size is None:
        if run_size is None:
            raise ExportError(
                "this run predicts images at their own size (no input_size in its checkpoint): give "
                "--input-size H W (prediction then resizes images to it)"
            )
        return tuple(int(v) for v in run_size)
    size = tuple(int(v) for v in input_size)
    if run_size is not None and size != tuple(run_size) and not dynamic and metadata["task"] != "detection":
        raise ExportError(
            f"--input-size {size[0]} {size[1]}: this run's network sees {run_size[0]}x{run_size[1]} inputs "
            f"(the size prediction resizes to); leave --input-size out, or add --dynamic"
        )
    if run_size is None and metadata["task"] == "segmentation" and not dynamic:
        pre["input_size"] = list(size)  # the fixed-size file needs images resized to it
    return size

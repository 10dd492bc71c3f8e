"""Predictions of a trained model on image files: masks, overlays and COCO results (the library side of
``densevision predict --checkpoint``; options and outputs: ``densevision.apps.predict``).

A pipeline over the images: threads read and preprocess the next images, the network runs on the current
one (on a backend that takes several calls at once, ``parallel_calls`` images are in flight) and its
thread resizes the logits (torch's operators stay in one thread), and threads take the argmax and write
the masks and overlays of the earlier ones. PNGs are written
at zlib level 1 (lossless, the same pixels; level 6 took longer than the network). The PyTorch model path
(``densevision.inference.optimize``), the detection helpers and torchvision are imported only for a
PyTorch model, so a runtime's predictions start without them.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from densevision.datasets.image_io import (
    ImageFileError,
    bounded_size,
    check_writable,
    output_names,
    read_rgb_image,
    resize_image,
    skipped_message,
    to_tensor,
)
from densevision.inference.preprocessing import Preprocessing, numpy_forward
from densevision.log import get_logger
from densevision.visualize import default_palette, labelled_overlay

logger = get_logger(__name__)

# zlib level of the PNGs written: lossless like any level; 1 encodes an overlay ~4x faster than Pillow's
# default 6 for ~10 % more bytes
PNG_COMPRESS_LEVEL = 1


@torch.inference_mode()
def run_segmentation(
    model: Callable[[Tensor], Tensor],
    image: np.ndarray,
    device: torch.device,
    input_size: tuple[int, int] | None = None,
    sliding_window: Mapping | None = None,
    *,
    preprocessing: Preprocessing | None = None,
) -> Tensor:
    """(H, W, 3) uint8 -> (C, H, W) float32 logits at the image's size.

    ``preprocessing`` (``densevision.inference.preprocessing``, the one path of every backend and of
    Lightning's predict): the image resized to the run's input size and normalised with its mean / std,
    whole or window by window, logits resized back to (H, W) before anyone takes an argmax. Without it,
    one is built from ``input_size`` and ``sliding_window`` with the default normalisation.
    """
    if preprocessing is None:
        preprocessing = Preprocessing(input_size=input_size, sliding_window=sliding_window)
    return preprocessing.predict(model, image, device)


@torch.inference_mode()
def run_detection(model: nn.Module, image: np.ndarray, device: torch.device) -> dict[str, Tensor]:
    """(H, W, 3) uint8 -> torchvision detections (boxes, labels, scores[, masks]) in float32 on the CPU."""
    detection = model([to_tensor(image).to(device)])[0]
    return {k: (v.float() if v.is_floating_point() else v).cpu() for k, v in detection.items()}


def coco_results(
    detection: dict[str, Tensor],
    image_id: int,
    image_size: tuple[int, int],
    category_ids: Sequence[int] | None = None,
) -> list[dict]:
    """One image's detections (all of them, whatever their score) as COCO result records. ``category_id``
    is ``category_ids[label]`` (the training data's COCO ids, as Lightning's predict writes them), or the
    model's label where the run did not record them (the background label 0 has none)."""
    from densevision.datasets.coco_eval import detections_to_coco

    if category_ids is None:
        category_ids = range(int(detection["labels"].max()) + 1) if len(detection["labels"]) else range(0)
    return detections_to_coco(
        detection, image_id=image_id, input_size=image_size, orig_size=image_size,
        label_to_category_id=category_ids,
    )


def _rescaled(detection: dict[str, Tensor], scale_hw: tuple[float, float], size: tuple[int, int]) -> dict:
    """Detections of a downscaled image in the original image's pixels (``size`` = its (H, W))."""
    out = dict(detection)
    sy, sx = scale_hw
    out["boxes"] = detection["boxes"] * torch.tensor([sx, sy, sx, sy])
    if "masks" in detection and len(detection["masks"]):
        out["masks"] = F.interpolate(detection["masks"], size=size, mode="bilinear", align_corners=False)
    return out


def agreement(
    kind: str, fast: Tensor | dict[str, Tensor], ref: Tensor | dict[str, Tensor], score_threshold: float
) -> str:
    """How far the fast path's output is from float32's, in words."""
    if kind == "dense":
        same = float((fast.argmax(0) == ref.argmax(0)).float().mean())
        return (
            f"{same:.2%} of pixels get the same class; max |logit diff| {float((fast - ref).abs().max()):.3g}"
        )
    from torchvision.ops import box_iou

    a = fast["boxes"][fast["scores"] >= score_threshold]
    b = ref["boxes"][ref["scores"] >= score_threshold]
    matched = int((box_iou(a, b).max(dim=0).values >= 0.5).sum()) if len(a) and len(b) else 0
    return (
        f"{matched}/{len(b)} float32 detections (score >= {score_threshold}) matched at IoU >= 0.5; "
        f"{len(a)} with the fast path"
    )


def timed(fn, *args) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


PREDICTION_OUTPUTS = ("masks", "overlays", "predictions.json", "images.json", "evaluation.json",
                      "predicted_by.json")  # fmt: skip
SOURCE_FILE = "predicted_by.json"


def check_fresh_output(output: Path, *, overwrite: bool = False) -> None:
    """Refuse to write predictions over those of an earlier call (two models' masks, or one model's masks
    beside another's ``evaluation.json``, must never be mixed); with ``overwrite`` the earlier set is
    removed as a whole (only the names predict and evaluate write: ``PREDICTION_OUTPUTS``).

    Raises:
        FileExistsError: ``output`` holds earlier predictions and ``overwrite`` is False.
    """
    earlier = [output / name for name in PREDICTION_OUTPUTS if (output / name).exists()]
    if not earlier:
        return
    if not overwrite:
        raise FileExistsError(
            f"--output {output} already holds predictions ({', '.join(p.name for p in earlier)}): choose "
            "another --output, or add --overwrite to replace that whole set"
        )
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _prefetched(fn: Callable, items: Sequence, pool: ThreadPoolExecutor, depth: int) -> Iterator:
    """``fn(item)`` for each item in order, ``depth`` calls ahead in ``pool``: reading and resizing images
    overlap with the network instead of adding to its time."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _read(item: tuple[Path, str], max_size: int | None, preprocessing: Preprocessing | None) -> tuple:
    """-> (file, name, image, downscaled image, network input or None, error or None)."""
    file, name = item
    try:
        image = read_rgb_image(file)
    except ImageFileError as err:
        return file, name, None, None, None, err
    small = resize_image(image, bounded_size(*image.shape[:2], max_size))
    return file, name, image, small, None if preprocessing is None else preprocessing.image(small), None


def _write_segmentation(
    logits: Tensor, image: np.ndarray, output: Path, name: str, palette, class_names: Sequence[str] | None
) -> None:
    """(C, h, w) logits on the CPU -> argmax, mask at the image's size, mask and overlay PNGs (numpy and
    Pillow only: this runs in the writing threads)."""
    # numpy's argmax over the class axis of contiguous (C, H, W) logits: the same first-maximum indices as
    # torch's, several times faster. The PyTorch path's logits are channels-last: without the contiguous
    # copy (made here by torch) that path ran 4x slower on 2 cores (measured, 30 CamVid frames)
    mask = logits.contiguous().numpy().argmax(0).astype(np.uint8)
    size = tuple(image.shape[:2])
    if mask.shape != size:
        mask = np.array(Image.fromarray(mask).resize(size[::-1], Image.Resampling.NEAREST))
    Image.fromarray(mask, mode="L").save(output / "masks" / name, compress_level=PNG_COMPRESS_LEVEL)
    colors = list(palette) if palette else default_palette(logits.shape[0])
    picture = labelled_overlay(image, mask, class_names, colors)
    Image.fromarray(picture).save(output / "overlays" / name, compress_level=PNG_COMPRESS_LEVEL)


def predict(
    model: nn.Module | Callable[[np.ndarray], np.ndarray],
    files: Sequence[Path],
    output: Path,
    *,
    device: torch.device | str = "cpu",
    optimize: bool = True,
    bf16: bool | None = None,
    compile: bool = False,
    class_names: Sequence[str] = (),
    category_ids: Sequence[int] | None = None,
    score_threshold: float = 0.5,
    input_size: tuple[int, int] | None = None,
    sliding_window: Mapping | None = None,
    preprocessing: Preprocessing | None = None,
    palette: Sequence[tuple[int, int, int]] | None = None,
    root: Path | None = None,
    max_size: int | None = None,
    strict: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    source: Mapping | None = None,
    workers: int = 2,
    log=None,
) -> dict[str, object]:
    """Run ``model`` on ``files`` and write the outputs described in the module docstring.

    ``model``: a PyTorch module, or a backend's function ``(N, 3, H, W) float32 normalised -> (N, C, H, W)
    float32 logits`` (``densevision.inference.backends.load_backend``; segmentation only), which goes
    through exactly the same preprocessing and postprocessing.
    ``optimize``, ``bf16`` and ``compile`` choose the PyTorch path (``densevision.inference.inference_path``).
    ``preprocessing``: the run's normalisation, input size and windows (``Preprocessing.from_hparams``);
    None = one from ``input_size`` and ``sliding_window`` with the default normalisation.
    ``input_size``: a segmentation run's training resolution (``SegmentationTask.input_size``); images
    are resized to it for the network and masks come back at each image's own size.
    ``sliding_window``: segmentation tile by tile (``sliding_window_inference``'s options, e.g.
    ``{"window_size": (360, 480), "overlap": 0.25}``), for images larger than the training crops.
    ``palette``: overlay colours per class (the run's; None = generated).
    Output names keep each file's path relative to ``root`` (the input folder). Images whose longer side
    exceeds ``max_size`` run downscaled (aspect ratio kept); masks, overlays and boxes are given back at
    the original size. Unreadable files are skipped and listed in one warning (``strict``: the first one
    raises). ``output`` is checked for writing, and for earlier predictions (``check_fresh_output``,
    ``overwrite``), before any work. ``source`` (what made the predictions) is written to
    ``predicted_by.json``. ``workers`` threads read and write images while the network runs; a backend
    function with a ``parallel_calls`` attribute (``load_backend(..., pipelined=True)``) is called from
    that many threads at once.

    Raises:
        ValueError: the model is a backbone (no predictions to draw), or the path options conflict.
        PermissionError: ``output`` cannot be written.
        FileExistsError: ``output`` holds earlier predictions and ``overwrite`` is False.
        ImageFileError: with ``strict``, the first unreadable file.
    """
    log = log or logger.info
    backend = not isinstance(model, nn.Module)
    if backend:
        kind = "dense"
    else:
        from densevision.models.kinds import model_kind

        kind = model_kind(model)
    if kind == "backbone":
        raise ValueError("this checkpoint's model is a backbone; use densevision extract for features")
    check_fresh_output(output, overwrite=overwrite)  # first: check_writable makes the folders
    check_writable(output / "overlays")
    if kind == "dense":
        check_writable(output / "masks")
    device = torch.device(device)
    if preprocessing is None:
        preprocessing = Preprocessing(input_size=input_size, sliding_window=sliding_window)
    parallel_calls = max(1, int(getattr(model, "parallel_calls", 1))) if backend else 1
    first_compared = True  # the first image is also run in eager float32 where the model was optimised
    if backend:
        runner = reference = numpy_forward(model)
    else:
        from densevision.inference.optimize import InferenceModel, inference_path

        model = reference = model.eval().to(device)
        runner = inference_path(model, optimize=optimize, bf16=bf16, compile=compile)
        first_compared = not isinstance(runner, InferenceModel)
    names = output_names(files, Path(root) if root is not None else Path(files[0]).parent)
    results: list[dict] = []
    images: list[dict] = []
    skipped: list[tuple[Path, str]] = []
    network_input = preprocessing if kind == "dense" else None
    read = functools.partial(_read, max_size=max_size, preprocessing=network_input)
    with (
        ThreadPoolExecutor(max(1, workers)) as pool,
        ThreadPoolExecutor(parallel_calls) as network,  # used only when the backend takes several calls
    ):
        writes: deque[Future] = deque()
        in_flight: deque[tuple[Tensor | Future, tuple, tuple]] = deque()  # (logits, size, write arguments)

        def finish(logits: Tensor | Future, size: tuple[int, int], arguments: tuple) -> None:
            # torch's operators run in this thread only: one of its OpenMP teams in a writing thread beside
            # the network's stalls both on 2 cores (the PyTorch path ran 4x slower)
            logits = logits.result() if isinstance(logits, Future) else logits
            mask_logits = preprocessing.postprocess(logits, size)[0].cpu()
            writes.append(pool.submit(_write_segmentation, mask_logits, *arguments))

        def compare_with_eager(out, seconds: float, run, file: Path, compared=lambda t: t) -> None:
            # once, on the first image: the optimised path's output against eager float32's on it
            ref, ref_seconds = timed(run, reference)
            log(
                f"optimized ({runner.describe()}) vs eager fp32 on {file.name}: "
                f"{agreement(kind, compared(out), compared(ref), score_threshold)}; "
                f"{seconds * 1e3:.0f} ms vs {ref_seconds * 1e3:.0f} ms (first call, warm-up included)"
            )

        items = list(zip(files, names, strict=True))
        stream = _prefetched(read, items, pool, depth=max(1, workers) + parallel_calls)
        for file, name, image, small, x, error in tqdm(
            stream, total=len(items), desc="predict", unit="image", disable=not progress
        ):
            if error is not None:
                if strict:
                    raise error
                skipped.append((file, str(error)))
                continue
            image_id, size = len(images) + len(skipped), tuple(image.shape[:2])
            for folder in ("overlays", "masks") if kind == "dense" else ("overlays",):
                (output / folder / name).parent.mkdir(parents=True, exist_ok=True)
            if kind == "dense":
                # logits resized to the size the image was read at (``max_size`` bounds their memory) in
                # ``finish``, the mask then given back at the original size by the writing thread
                run = functools.partial(_network_logits, preprocessing, x=x, device=device)
                if parallel_calls > 1:  # up to parallel_calls images in the network at once
                    out = network.submit(run, runner)
                else:
                    out, seconds = timed(run, runner)
                    if not first_compared:
                        first_compared = True
                        resized = functools.partial(preprocessing.postprocess, size=small.shape[:2])
                        compare_with_eager(out, seconds, run, file, lambda t, resized=resized: resized(t)[0])
                in_flight.append((out, small.shape[:2], (image, output, name, palette, class_names)))
                while in_flight and (len(in_flight) >= parallel_calls or in_flight[0][0].done()):
                    finish(*in_flight.popleft())
            else:
                run = functools.partial(run_detection, image=small, device=device)
                out, seconds = timed(run, runner)
                if not first_compared:
                    first_compared = True
                    compare_with_eager(out, seconds, run, file)
                if small.shape[:2] != size:
                    out = _rescaled(out, (size[0] / small.shape[0], size[1] / small.shape[1]), size)
                results += coco_results(out, image_id, size, category_ids)
                _write_detections(out, image, output / "overlays" / name, class_names, score_threshold)
            images.append({"id": image_id, "file_name": str(file), "height": size[0], "width": size[1]})
            while len(writes) > 2 * max(1, workers) + parallel_calls:
                writes.popleft().result()
        while in_flight:
            finish(*in_flight.popleft())
        for pending in writes:
            pending.result()
    if skipped:
        logger.warning(skipped_message(skipped, len(files)))
    if kind == "detection":
        (output / "predictions.json").write_text(json.dumps(results))
        (output / "images.json").write_text(json.dumps(images, indent=1))
    record = {"kind": "detection" if kind == "detection" else "segmentation", **dict(source or {})}
    if kind == "dense":
        record["preprocessing"] = preprocessing.to_dict()
    (output / SOURCE_FILE).write_text(json.dumps(record, indent=1))
    log(f"wrote {len(images)} image(s) to {output} ({record['kind']})"
        + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    return {"kind": kind, "images": images, "results": results, "skipped": skipped}


@torch.inference_mode()
def _network_logits(
    preprocessing: Preprocessing, forward: Callable[[Tensor], Tensor], *, x: np.ndarray, device
) -> Tensor:
    """One preprocessed image (1, 3, h, w) -> (1, C, h, w) logits at the network's size (whole, or window
    by window); ``Preprocessing.postprocess`` resizes them to the image."""
    return preprocessing.logits(forward, torch.from_numpy(x).to(device))


def _write_detections(
    detection: dict[str, Tensor], image: np.ndarray, path: Path, class_names, score_threshold: float
) -> None:
    from densevision.visualize import draw_detections

    drawn = draw_detections(torch.from_numpy(image).permute(2, 0, 1).contiguous(), detection, class_names,
                            score_threshold=score_threshold)  # fmt: skip
    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(path, compress_level=PNG_COMPRESS_LEVEL)

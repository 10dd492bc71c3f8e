"""Predictions of a trained model on image files: masks, overlays and COCO results (the library side of
``densevision predict --checkpoint``; options and outputs: ``densevision.apps.predict``)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.ops import box_iou
from tqdm import tqdm

from densevision.datasets.coco_eval import detections_to_coco
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
from densevision.datasets.transforms import EvaluationTransform
from densevision.inference.optimize import InferenceModel, inference_path
from densevision.log import get_logger
from densevision.models.kinds import model_kind
from densevision.models.segmentation.decoder import resize_logits
from densevision.models.segmentation.sliding_window import sliding_window_inference
from densevision.visualize import default_palette, draw_detections, labelled_overlay

logger = get_logger(__name__)


@torch.inference_mode()
def run_segmentation(
    model: nn.Module,
    image: np.ndarray,
    device: torch.device,
    input_size: tuple[int, int] | None = None,
    sliding_window: Mapping | None = None,
) -> Tensor:
    """(H, W, 3) uint8 -> (C, H, W) float32 logits at the image's size.

    The image goes through the evaluation preprocessing of training (``EvaluationTransform``: resized to
    ``input_size``, the run's training resolution, and normalised), window by window with
    ``sliding_window`` (``sliding_window_inference``'s options); the logits are resized back to (H, W)
    before anyone takes an argmax.
    """
    x = EvaluationTransform(input_size)(image=image)["image"][None].to(device)
    logits = model(x) if sliding_window is None else sliding_window_inference(model, x, **sliding_window)
    return resize_logits(logits.float(), image.shape[:2])[0].cpu()


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


def predict(
    model: nn.Module,
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
    root: Path | None = None,
    max_size: int | None = None,
    strict: bool = False,
    progress: bool = True,
    log=None,
) -> dict[str, object]:
    """Run ``model`` on ``files`` and write the outputs described in the module docstring.

    ``optimize``, ``bf16`` and ``compile`` choose the path (``densevision.inference.inference_path``).
    ``input_size``: a segmentation run's training resolution (``SegmentationTask.input_size``); images
    are resized to it for the network and masks come back at each image's own size.
    ``sliding_window``: segmentation tile by tile (``sliding_window_inference``'s options, e.g.
    ``{"window_size": (360, 480), "overlap": 0.25}``), for images larger than the training crops.
    Output names keep each file's path relative to ``root`` (the input folder). Images whose longer side
    exceeds ``max_size`` run downscaled (aspect ratio kept); masks, overlays and boxes are given back at
    the original size. Unreadable files are skipped and listed in one warning (``strict``: the first one
    raises). ``output`` is checked for writing before any work.

    Raises:
        ValueError: the model is a backbone (no predictions to draw), or the path options conflict.
        PermissionError: ``output`` cannot be written.
        ImageFileError: with ``strict``, the first unreadable file.
    """
    log = log or logger.info
    kind = model_kind(model)
    if kind == "backbone":
        raise ValueError("this checkpoint's model is a backbone; use densevision extract for features")
    check_writable(output / "overlays")
    if kind == "dense":
        check_writable(output / "masks")
    device = torch.device(device)
    model = model.eval().to(device)
    runner = inference_path(model, optimize=optimize, bf16=bf16, compile=compile)
    if kind == "detection":
        run = run_detection
    else:
        run = functools.partial(run_segmentation, input_size=input_size, sliding_window=sliding_window)
    names = output_names(files, Path(root) if root is not None else Path(files[0]).parent)
    results: list[dict] = []
    images: list[dict] = []
    skipped: list[tuple[Path, str]] = []
    for image_id, (file, name) in enumerate(
        tqdm(list(zip(files, names, strict=True)), desc="predict", unit="image", disable=not progress)
    ):
        try:
            image = read_rgb_image(file)
        except ImageFileError as err:
            if strict:
                raise
            skipped.append((file, str(err)))
            continue
        size = tuple(image.shape[:2])
        small = resize_image(image, bounded_size(*size, max_size))
        out, seconds = timed(run, runner, small, device)
        if not images and isinstance(runner, InferenceModel):
            ref, ref_seconds = timed(run, model, small, device)
            log(
                f"optimized ({runner.describe()}) vs eager fp32 on {file.name}: "
                f"{agreement(kind, out, ref, score_threshold)}; "
                f"{seconds * 1e3:.0f} ms vs {ref_seconds * 1e3:.0f} ms (first call, warm-up included)"
            )
        for folder in ("overlays", "masks") if kind == "dense" else ("overlays",):
            (output / folder / name).parent.mkdir(parents=True, exist_ok=True)
        if kind == "dense":
            mask = out.argmax(0).numpy().astype(np.uint8)
            if mask.shape != size:
                mask = np.array(Image.fromarray(mask).resize(size[::-1], Image.Resampling.NEAREST))
            Image.fromarray(mask, mode="L").save(output / "masks" / name)
            picture = labelled_overlay(image, mask, class_names, default_palette(out.shape[0]))
        else:
            if small.shape[:2] != size:
                out = _rescaled(out, (size[0] / small.shape[0], size[1] / small.shape[1]), size)
            results += coco_results(out, image_id, size, category_ids)
            drawn = draw_detections(torch.from_numpy(image).permute(2, 0, 1).contiguous(), out, class_names,
                                    score_threshold=score_threshold)
            picture = drawn.permute(1, 2, 0).numpy()
        images.append({"id": image_id, "file_name": str(file), "height": size[0], "width": size[1]})
        Image.fromarray(picture).save(output / "overlays" / name)
    if skipped:
        logger.warning(skipped_message(skipped, len(files)))
    if kind == "detection":
        (output / "predictions.json").write_text(json.dumps(results))
        (output / "images.json").write_text(json.dumps(images, indent=1))
    log(f"wrote {len(images)} image(s) to {output} ({kind if kind == 'detection' else 'segmentation'})"
        + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    return {"kind": kind, "images": images, "results": results, "skipped": skipped}

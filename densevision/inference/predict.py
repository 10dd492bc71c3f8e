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
from PIL import Image
from torch import Tensor, nn
from torchvision.ops import box_iou

from densevision.datasets.coco_eval import detections_to_coco
from densevision.datasets.image_io import read_rgb_image, to_tensor
from densevision.datasets.transforms import EvaluationTransform
from densevision.inference.optimize import InferenceModel, inference_path
from densevision.models.kinds import model_kind
from densevision.models.segmentation.decoder import resize_logits
from densevision.models.segmentation.sliding_window import sliding_window_inference
from densevision.visualize import default_palette, draw_detections, overlay


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


def coco_results(detection: dict[str, Tensor], image_id: int, image_size: tuple[int, int]) -> list[dict]:
    """One image's detections (all of them, whatever their score) as COCO result records, ``category_id``
    = the model's label (the background label 0 has none)."""
    labels = range(int(detection["labels"].max()) + 1) if len(detection["labels"]) else range(0)
    return detections_to_coco(
        detection, image_id=image_id, input_size=image_size, orig_size=image_size, label_to_category_id=labels
    )


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
    score_threshold: float = 0.5,
    input_size: tuple[int, int] | None = None,
    log=print,
    sliding_window: Mapping | None = None,
) -> dict[str, object]:
    """Run ``model`` on ``files`` and write the outputs described in the module docstring.

    ``optimize``, ``bf16`` and ``compile`` choose the path (``densevision.inference.inference_path``).
    ``input_size``: a segmentation run's training resolution (``SegmentationTask.input_size``); images
    are resized to it for the network and masks come back at each image's own size.
    ``sliding_window``: segmentation tile by tile (``sliding_window_inference``'s options, e.g.
    ``{"window_size": (360, 480), "overlap": 0.25}``), for images larger than the training crops.

    Raises:
        ValueError: the model is a backbone (no predictions to draw), or the path options conflict.
    """
    kind = model_kind(model)
    if kind == "backbone":
        raise ValueError("this checkpoint's model is a backbone; use densevision extract for features")
    device = torch.device(device)
    model = model.eval().to(device)
    runner = inference_path(model, optimize=optimize, bf16=bf16, compile=compile)
    if kind == "detection":
        run = run_detection
    else:
        run = functools.partial(run_segmentation, input_size=input_size, sliding_window=sliding_window)
    (output / "overlays").mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    images: list[dict] = []
    for image_id, file in enumerate(files):
        image = read_rgb_image(file)
        out, seconds = timed(run, runner, image, device)
        if image_id == 0 and isinstance(runner, InferenceModel):
            ref, ref_seconds = timed(run, model, image, device)
            log(
                f"optimized ({runner.describe()}) vs eager fp32 on {file.name}: "
                f"{agreement(kind, out, ref, score_threshold)}; "
                f"{seconds * 1e3:.0f} ms vs {ref_seconds * 1e3:.0f} ms (first call, warm-up included)"
            )
        if kind == "dense":
            mask = out.argmax(0).numpy().astype(np.uint8)
            (output / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask, mode="L").save(output / "masks" / f"{file.stem}.png")
            picture = overlay(image, mask, default_palette(out.shape[0]))
        else:
            results += coco_results(out, image_id, image.shape[:2])
            drawn = draw_detections(
                torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                out,
                class_names,
                score_threshold=score_threshold,
            )
            picture = drawn.permute(1, 2, 0).numpy()
        images.append(
            {"id": image_id, "file_name": str(file), "height": image.shape[0], "width": image.shape[1]}
        )
        Image.fromarray(picture).save(output / "overlays" / f"{file.stem}.png")
    if kind == "detection":
        (output / "predictions.json").write_text(json.dumps(results))
        (output / "images.json").write_text(json.dumps(images, indent=1))
    log(f"wrote {len(files)} image(s) to {output} ({kind if kind == 'detection' else 'segmentation'})")
    return {"kind": kind, "images": images, "results": results}

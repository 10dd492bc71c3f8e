"""``densevision predict --checkpoint RUN.ckpt --input IMG_OR_DIR --output OUT`` (also ``densevision infer``):
a trained checkpoint on image files, without a config or a data module.

The model is rebuilt from the run's ``config.yaml`` and the checkpoint (``densevision.checkpoints``,
``weights_only=True``). Writes, per image ``<stem>``:

- segmentation: ``OUT/masks/<stem>.png`` (class indices, 8-bit single channel) and
  ``OUT/overlays/<stem>.png`` (colour overlay);
- detection: ``OUT/overlays/<stem>.png`` (boxes, labels, scores and instance masks drawn) and, for all
  images, ``OUT/predictions.json`` (COCO results: ``image_id``, ``category_id`` = the model's label,
  ``bbox`` [x, y, w, h] in pixels, ``score``, RLE ``segmentation`` for masks) with
  ``OUT/images.json`` (COCO ``images``: id, file_name, height, width).

CPU fast paths: ``--channels-last`` (NHWC memory format, which oneDNN convolutions prefer) and ``--bf16``
(bfloat16 autocast; native on CPUs with AVX512-BF16 or AMX, emulated and usually slower elsewhere). Either
one is checked against float32 on the first image, and the agreement (pixels with the same class, or
detections matched at IoU >= 0.5) and both timings are printed.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from torch import Tensor, nn
from torchvision.ops import box_iou
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from densevision.checkpoints import load_task
from densevision.export import model_kind
from densevision.images import IMAGENET_MEAN, IMAGENET_STD, find_images, read_rgb, to_tensor


@dataclass(frozen=True)
class FastPath:
    """How the model runs: device, memory format and autocast dtype."""

    device: torch.device
    channels_last: bool = False
    bf16: bool = False

    def describe(self) -> str:
        parts = [self.device.type] + (["channels_last"] if self.channels_last else [])
        return "+".join(parts + (["bf16 autocast"] if self.bf16 else ["fp32"]))


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bfloat16 matmuls and convolutions run natively."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def prepare(model: nn.Module, path: FastPath) -> nn.Module:
    """``model`` in eval mode on ``path.device``, its weights in ``path``'s memory format."""
    layout = torch.channels_last if path.channels_last else torch.contiguous_format
    return model.eval().to(path.device, memory_format=layout)


@torch.inference_mode()
def run_segmentation(model: nn.Module, image: np.ndarray, path: FastPath) -> Tensor:
    """(H, W, 3) uint8 -> (C, H, W) float32 logits (normalised as in densevision's segmentation presets)."""
    x = to_tensor(image, mean=IMAGENET_MEAN, std=IMAGENET_STD)[None].to(path.device)
    if path.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(path.device.type, dtype=torch.bfloat16, enabled=path.bf16):
        return model(x)[0].float().cpu()


@torch.inference_mode()
def run_detection(model: nn.Module, image: np.ndarray, path: FastPath) -> dict[str, Tensor]:
    """(H, W, 3) uint8 -> torchvision detections (boxes, labels, scores[, masks]) in float32 on the CPU."""
    x = to_tensor(image).to(path.device)
    if path.channels_last:
        x = x[None].contiguous(memory_format=torch.channels_last)[0]
    with torch.autocast(path.device.type, dtype=torch.bfloat16, enabled=path.bf16):
        detection = model([x])[0]
    return {k: (v.float() if v.is_floating_point() else v).cpu() for k, v in detection.items()}


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 distinct colours (golden-ratio hue steps)."""
    hues = [(i * 0.618033988749895) % 1.0 for i in range(num_classes)]
    return np.array(
        [[int(c * 255) for c in colorsys.hsv_to_rgb(h, 0.75, 0.95)] for h in hues], dtype=np.uint8
    )


def segmentation_overlay(
    image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.5
) -> np.ndarray:
    """Colour ``mask`` (H, W) over ``image`` (H, W, 3) uint8."""
    colors = palette(num_classes)[mask].astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + colors * alpha).round().astype(np.uint8)


def detection_overlay(
    image: np.ndarray, detection: dict[str, Tensor], class_names: Sequence[str], score_threshold: float
) -> np.ndarray:
    """Boxes, "name score" captions and instance masks (probability > 0.5) above ``score_threshold``."""
    picture = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    keep = detection["scores"] >= score_threshold
    if not bool(keep.any()):
        return image
    labels = detection["labels"][keep].tolist()
    colors = [tuple(int(c) for c in color) for color in palette(max(labels) + 1)[labels]]
    if "masks" in detection:
        masks = detection["masks"][keep][:, 0] > 0.5
        picture = draw_segmentation_masks(picture, masks, alpha=0.45, colors=colors)
    names = [class_names[i] if i < len(class_names) else str(i) for i in labels]
    captions = [f"{n} {s:.2f}" for n, s in zip(names, detection["scores"][keep].tolist(), strict=True)]
    picture = draw_bounding_boxes(picture, detection["boxes"][keep], labels=captions, colors=colors, width=2)
    return picture.permute(1, 2, 0).numpy()


def coco_results(detection: dict[str, Tensor], image_id: int) -> list[dict]:
    """One image's detections as COCO result records (all of them, whatever their score)."""
    boxes = detection["boxes"].tolist()
    records = [
        {
            "image_id": image_id,
            "category_id": int(label),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(score),
        }
        for (x1, y1, x2, y2), label, score in zip(
            boxes, detection["labels"], detection["scores"], strict=True
        )
    ]
    if "masks" in detection:
        binary = (detection["masks"][:, 0] > 0.5).numpy().astype(np.uint8)
        for record, m in zip(records, binary, strict=True):
            rle = coco_mask.encode(np.asfortranarray(m))
            record["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return records


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
    path: FastPath,
    class_names: Sequence[str],
    score_threshold: float = 0.5,
    log=print,
) -> dict[str, object]:
    """Run ``model`` on ``files`` and write the outputs described in the module docstring."""
    kind = model_kind(model)
    if kind == "backbone":
        raise ValueError("this checkpoint's model is a backbone; use densevision extract for features")
    run = run_detection if kind == "detection" else run_segmentation
    fast = prepare(model, path)
    (output / "overlays").mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    images: list[dict] = []
    for image_id, file in enumerate(files):
        image = read_rgb(file)
        out, seconds = timed(run, fast, image, path)
        if image_id == 0 and (path.channels_last or path.bf16):
            reference = FastPath(path.device)
            ref, ref_seconds = timed(run, prepare(model, reference), image, reference)
            log(
                f"{path.describe()} vs {reference.describe()} on {file.name}: "
                f"{agreement(kind, out, ref, score_threshold)}; "
                f"{seconds * 1e3:.0f} ms vs {ref_seconds * 1e3:.0f} ms"
            )
            fast = prepare(model, path)
        if kind == "dense":
            mask = out.argmax(0).numpy().astype(np.uint8)
            (output / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask, mode="L").save(output / "masks" / f"{file.stem}.png")
            picture = segmentation_overlay(image, mask, out.shape[0])
        else:
            results += coco_results(out, image_id)
            picture = detection_overlay(image, out, class_names, score_threshold)
        images.append(
            {"id": image_id, "file_name": str(file), "height": image.shape[0], "width": image.shape[1]}
        )
        Image.fromarray(picture).save(output / "overlays" / f"{file.stem}.png")
    if kind == "detection":
        (output / "predictions.json").write_text(json.dumps(results))
        (output / "images.json").write_text(json.dumps(images, indent=1))
    log(f"wrote {len(files)} image(s) to {output} ({kind if kind == 'detection' else 'segmentation'})")
    return {"kind": kind, "images": images, "results": results}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densevision predict",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__ + "\nWith --config / -c, `densevision predict` is Lightning's predict instead "
        "(its options: densevision predict -c CONFIG --help).",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a densevision fit run's .ckpt")
    parser.add_argument("--run-config", type=Path, help="the run's config.yaml (default: found beside it)")
    parser.add_argument("--input", type=Path, required=True, help="an image file or a folder of images")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="detections drawn (json keeps all)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    task = load_task(args.checkpoint, args.run_config)
    path = FastPath(torch.device(args.device), args.channels_last, args.bf16)
    if path.bf16 and path.device.type == "cpu" and not cpu_has_native_bf16():
        print("note: this CPU has no native bfloat16 (AVX512-BF16 / AMX): bf16 autocast is emulated")
    class_names = list(getattr(task, "class_names", None) or [])
    predict(
        task.model,
        find_images(args.input),
        args.output,
        path=path,
        class_names=class_names,
        score_threshold=args.score_threshold,
    )
    return 0

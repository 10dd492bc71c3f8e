"""How far an inference path moves a network's decisions from the eager float32 reference: top-1
agreement for classifiers, pixel agreement and mIoU of the label maps for segmenters, measured on CamVid
val images where they exist (else on the random timing batch)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torchmetrics.classification import MulticlassJaccardIndex

from densevision.datasets.image_io import find_images, read_rgb_image, to_tensor
from densevision.datasets.transforms import MEAN, STD

Row = dict[str, object]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the folder the command runs in (the repository), as the tests find it;
    ``DENSEVISION_SHARED_DATA`` overrides."""
    return Path(os.environ.get("DENSEVISION_SHARED_DATA", Path.cwd().parent / "shared" / "data"))


def camvid_batch(root: Path, count: int, size: int) -> Tensor:
    """(count, 3, size, size) normalised CamVid val images, evenly spaced over the sequence: shorter side
    resized to ``size`` (bilinear, antialiased), then centre-cropped.

    Raises:
        FileNotFoundError: ``root / "val"`` holds no images.
    """
    files = find_images(root / "val")
    picked = files[:: max(1, len(files) // count)][:count]
    images = [TF.center_crop(TF.resize(to_tensor(read_rgb_image(f)), [size], antialias=True), [size, size])
              for f in picked]
    return TF.normalize(torch.stack(images), list(MEAN), list(STD))


def agreement_batch(
    camvid: str | None, count: int, image_size: int, timing_batch: Tensor
) -> tuple[Tensor, str]:
    """The images the inference paths are compared on, and their description for the table title.

    Args:
        camvid: a CamVid folder, ``"none"`` for the random timing batch, or ``None`` for the shared data's
            CamVid where it exists.
        count: CamVid val images to take.
        image_size: their side after resize and centre crop.
        timing_batch: the (N, 3, H, W) fallback.

    Raises:
        FileNotFoundError: ``camvid`` names a folder that does not exist.
    """
    default = shared_data_dir() / "camvid"
    if camvid == "none" or (camvid is None and not default.is_dir()):
        return timing_batch, "the random timing batch"
    folder = Path(camvid) if camvid is not None else default
    if not folder.is_dir():
        raise FileNotFoundError(f"--camvid {folder}: no such folder (expected CamVid with a val/ folder)")
    images = camvid_batch(folder, count, image_size)
    return images, f"{len(images)} CamVid val images (shorter side resized to {image_size}, centre crop)"


def forward_chunks(model: nn.Module, images: Tensor, batch_size: int) -> Tensor | dict[str, Tensor]:
    """``model`` over (N, C, H, W) ``images`` in chunks of ``batch_size``, concatenated, float32."""
    with torch.inference_mode():
        outs = [model(chunk) for chunk in images.split(batch_size)]
    if isinstance(outs[0], Tensor):
        return torch.cat(outs).float()
    return {k: torch.cat([o[k] for o in outs]).float() for k in outs[0]}


def agreement(out: Tensor, expected: Tensor, image_size: tuple[int, ...]) -> Row:
    """How far ``out`` is from the fp32 reference ``expected``: max |difference|, and top-1 agreement
    (classifier, (N, classes)) or pixel agreement and mIoU against the reference label map (segmentation,
    (N, classes, H, W) at the input size)."""
    row: Row = {"max_abs_diff": (out - expected).abs().max().item()}
    if out.dim() == 2:
        row["top1_agree"] = (out.argmax(1) == expected.argmax(1)).float().mean().item()
    elif out.dim() == 4 and tuple(out.shape[-2:]) == tuple(image_size):
        labels, reference = out.argmax(1), expected.argmax(1)
        row["pixel_agree"] = (labels == reference).float().mean().item()
        miou = MulticlassJaccardIndex(num_classes=out.shape[1], average="macro")
        row["miou_vs_fp32"] = miou(labels, reference).item()
    return row

"""Prediction output for detection: pictures with boxes, masks, class names and scores drawn, and a COCO
results json (all detections, original image pixels, COCO category ids)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from densevision.datasets.coco_eval import detections_to_coco
from densevision.tasks.detection import gather_objects

# one colour per class (cycled), the same for its boxes and masks; torchvision's default palette starts
# with black, invisible on dark images
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def draw_detections(
    image: Tensor,
    detection: dict[str, Tensor],
    class_names: Sequence[str],
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> Tensor:
    """``image (3, H, W)`` float in [0, 1] with the detections above ``score_threshold`` drawn: masks
    (``(N, 1, H, W)`` probabilities) filled, boxes outlined, "name score" labels. Returns uint8 (3, H, W)."""
    keep = (detection["scores"] >= score_threshold) & (detection["labels"] > 0)
    picture = (image.clamp(0, 1) * 255).to(torch.uint8)
    if not bool(keep.any()):
        return picture
    labels = detection["labels"][keep].tolist()
    colors = [PALETTE[label % len(PALETTE)] for label in labels]
    if "masks" in detection:
        masks = detection["masks"][keep][:, 0] > mask_threshold
        picture = draw_segmentation_masks(picture, masks, alpha=0.45, colors=colors)
    scores = detection["scores"][keep].tolist()
    captions = [f"{class_names[label]} {score:.2f}" for label, score in zip(labels, scores, strict=True)]
    return draw_bounding_boxes(picture, detection["boxes"][keep], labels=captions, colors=colors, width=2)


class DetectionPredictionWriter(BasePredictionWriter):
    """Writes ``<output_dir>/<image id>.png`` pictures and ``<output_dir>/predictions.json`` (COCO results).

    Args:
        output_dir: folder for the outputs; None = ``<log dir>/predictions``.
        score_threshold: detections drawn on the pictures (the json keeps them all).
        max_pictures: pictures written per process; None = all.
    """

    def __init__(self, output_dir: str | None = None, score_threshold: float = 0.5,
                 max_pictures: int | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.score_threshold = score_threshold
        self.max_pictures = max_pictures
        self._results: dict[int, list[dict]] = {}
        self._written = 0

    def _folder(self, trainer: Trainer) -> Path:
        folder = Path(self.output_dir or Path(trainer.log_dir or trainer.default_root_dir) / "predictions")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._results, self._written = {}, 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        loader = trainer.predict_dataloaders
        dataset = (loader[dataloader_idx] if isinstance(loader, (list, tuple)) else loader).dataset
        for item in prediction:
            image, target, detection = item["image"], item["target"], item["detection"]
            image_id = int(target["image_id"])
            self._results[image_id] = detections_to_coco(
                detection, image_id=image_id, input_size=tuple(image.shape[-2:]),
                orig_size=tuple(target["orig_size"].tolist()),
                label_to_category_id=dataset.label_to_category_id)
            if self.max_pictures is None or self._written < self.max_pictures:
                picture = draw_detections(image, detection, dataset.class_names,
                                          score_threshold=self.score_threshold)
                write_png(picture, str(self._folder(trainer) / f"{image_id}.png"))
                self._written += 1

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        per_image: dict[int, list[dict]] = {}
        for part in gather_objects(self._results):
            for image_id, results in part.items():
                per_image.setdefault(image_id, results)
        if trainer.is_global_zero:
            results = [r for image_id in sorted(per_image) for r in per_image[image_id]]
            (self._folder(trainer) / "predictions.json").write_text(json.dumps(results))

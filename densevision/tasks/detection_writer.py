"""Prediction output for detection: pictures with boxes, masks, class names and scores drawn, and a COCO
results json (all detections, original image pixels, COCO category ids)."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from densevision.datasets.coco_eval import detections_to_coco
from densevision.tasks.detection import gather_objects
from densevision.visualize import detection_side_by_side, picture_name


class DetectionPredictionWriter(BasePredictionWriter):
    """Writes ``<output_dir>/<image file stem>.png`` pictures (ground truth beside the prediction, with class
    names, enlarged to at least ``min_height`` pixels) and ``<output_dir>/predictions.json`` (COCO results).

    Args:
        output_dir: folder for the outputs; None = ``<log dir>/predictions``.
        score_threshold: detections drawn on the pictures (the json keeps them all).
        max_pictures: pictures written per process; None = all.
        min_height: pictures of smaller images are enlarged by a whole factor to at least this height.
    """

    def __init__(self, output_dir: str | None = None, score_threshold: float = 0.5,
                 max_pictures: int | None = None, min_height: int = 384) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.min_height = min_height
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
                picture = detection_side_by_side(image, target, detection, dataset.class_names,
                                                 score_threshold=self.score_threshold,
                                                 min_height=self.min_height)
                picture.save(self._folder(trainer) / picture_name(dataset, image_id))
                self._written += 1

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        per_image: dict[int, list[dict]] = {}
        for part in gather_objects(self._results):
            for image_id, results in part.items():
                per_image.setdefault(image_id, results)
        if trainer.is_global_zero:
            results = [r for image_id in sorted(per_image) for r in per_image[image_id]]
            (self._folder(trainer) / "predictions.json").write_text(json.dumps(results))

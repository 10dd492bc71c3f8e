"""Semantic segmentation task: a loss from ``densevision.tasks.losses`` (cross-entropy by default) with an
ignore index and optional class weights, IoU metrics from a torchmetrics confusion matrix, optional
sliding-window evaluation, JSON metrics files and side-by-side prediction pictures."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from densevision.datasets.transforms import MEAN, STD, denormalize
from densevision.inference.preprocessing import Preprocessing
from densevision.metrics import iou_from_confusion  # re-exported: older code imports it from here
from densevision.models.segmentation.sliding_window import SlidingWindow
from densevision.tasks.base import BaseTask, default_optimizer
from densevision.tasks.losses import CrossEntropy, LossFactory
from densevision.visualize import default_palette, legend, side_by_side


class SegmentationTask(BaseTask):
    """Trains and evaluates a model that maps (N, 3, H, W) images to (N, C, H, W) logits.

    Batches are dicts with ``image`` (N, 3, H, W) and ``mask`` (N, H, W) int64 (``path`` optional).

    Args:
        model: the segmentation network (``num_classes`` linked from the data module by the CLI).
        optimizer, lr_scheduler: see :class:`BaseTask`.
        num_classes: scored classes C (linked from the data module).
        ignore_index: mask value excluded from loss and metrics, or None.
        class_weights: per-class loss weights (linked from the data module's ``class_weighting``), or None.
        class_names: names used in logs and the metrics JSON (linked from the data module).
        input_size: (height, width) images are resized to before the network at prediction time (the data
            module's ``resize``, linked); None = as they come. Saved in the checkpoint, so predictions on
            new images see what training saw.
        loss: ``(ignore_index, class_weights) -> loss module`` (``densevision.tasks.losses``; in YAML a
            ``class_path`` with the loss's own ``init_args``); None = ``CrossEntropy``.
        sliding_window: options of ``sliding_window_inference`` (``window_size``, ``overlap``, ``blend``,
            ``batch_size``, ``flip_tta``) for validation, test and prediction: images larger than the
            training crops are predicted tile by tile. None = whole images.
        mean, std: the normalisation of the training images (the data module's, linked); saved with the
            run so every prediction path normalises as training did (``densevision.inference.preprocessing``).
        palette: one RGB colour per class for overlays (the data module's ``palette``, linked); None =
            generated colours.

    Attributes:
        preprocessing: the run's :class:`~densevision.inference.preprocessing.Preprocessing` (normalisation,
            input size, windows), shared with ``densevision predict`` and exported models.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        *,
        num_classes: int,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        input_size: tuple[int, int] | None = None,
        loss: LossFactory | None = None,
        sliding_window: SlidingWindow | None = None,
        mean: tuple[float, float, float] = MEAN,
        std: tuple[float, float, float] = STD,
        palette: Sequence[tuple[int, int, int]] | None = None,
    ) -> None:
        super().__init__(model, optimizer, lr_scheduler)
        self.save_config_hyperparameters()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.class_names = list(class_names) if class_names else [f"class{i}" for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"got {len(self.class_names)} class_names for num_classes={num_classes}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"got {len(class_weights)} class_weights for num_classes={num_classes}")
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights)
        self.criterion = (loss or CrossEntropy)(ignore_index, weights)
        self.preprocessing = Preprocessing(mean, std, self.input_size, sliding_window)
        self.sliding_window = self.preprocessing.sliding_window
        self.mean, self.std = self.preprocessing.mean, self.preprocessing.std
        self.palette = [tuple(int(v) for v in c) for c in palette] if palette else None
        if self.palette is not None and len(self.palette) != num_classes:
            raise ValueError(f"got {len(self.palette)} palette colours for num_classes={num_classes}")
        # torchmetrics drops pixels equal to ignore_index before counting.
        self.confusion = nn.ModuleDict(
            {
                stage: MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index)
                for stage in ("val", "test")
            }
        )

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, C, H, W) logits."""
        return self.model(images)

    def loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        """The configured loss over pixels that are not ``ignore_index``, weighted by ``class_weights``."""
        return self.criterion(logits, masks)

    def predict_logits(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, C, H, W) logits for evaluation: tile by tile with ``sliding_window``."""
        return self.preprocessing.logits(self.model, images)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.log(
            "train/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(batch["mask"]), sync_dist=True
        )
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        logits = self.preprocessing.postprocess(self.predict_logits(batch["image"]), batch["mask"].shape[-2:])
        loss = self.loss(logits, batch["mask"])
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(logits), sync_dist=True)
        self.confusion[stage].update(logits.argmax(1), batch["mask"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """-> the batch plus ``prediction`` (N, H, W) class indices."""
        size = batch["mask"].shape[-2:] if "mask" in batch else batch["image"].shape[-2:]
        logits = self.preprocessing.postprocess(self.predict_logits(batch["image"]), size)
        return {**batch, "prediction": logits.argmax(1)}

    def _eval_epoch_end(self, stage: str) -> None:
        confusion = self.confusion[stage].compute().cpu()
        metrics = iou_from_confusion(confusion)
        self.confusion[stage].reset()
        # the confusion matrix is already summed over processes: sync_dist averages equal values (and keeps
        # Lightning from asking for it on every epoch-level value under DDP)
        self.log(f"{stage}/mIoU", metrics["mIoU"], prog_bar=True, sync_dist=True)
        self.log(f"{stage}/pixel_accuracy", metrics["pixel_accuracy"], sync_dist=True)
        for name, iou in zip(self.class_names, metrics["iou"], strict=True):
            if not math.isnan(iou):
                self.log(f"{stage}/iou_{name}", iou, sync_dist=True)
        if not self.trainer.sanity_checking:
            self._write_metrics(stage, metrics, confusion)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _write_metrics(self, stage: str, metrics: dict[str, Any], confusion: Tensor) -> None:
        """``<log dir>/<stage>_metrics.json``: rewritten each epoch, so it holds the latest evaluation."""
        log_dir = self.trainer.log_dir  # a collective under DDP (broadcast): every process must ask
        if log_dir is None or not self.trainer.is_global_zero:
            return
        report = {
            "stage": stage,
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "mIoU": metrics["mIoU"],
            "pixel_accuracy": metrics["pixel_accuracy"],
            "per_class_iou": {
                name: (None if math.isnan(v) else v)
                for name, v in zip(self.class_names, metrics["iou"], strict=True)
            },
            "ignore_index": self.ignore_index,
            "class_names": self.class_names,
            "confusion_matrix": confusion.tolist(),
        }
        path = Path(log_dir) / f"{stage}_metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))


class SegmentationPictureWriter(Callback):
    """Writes ``image | ground truth | prediction`` PNGs (with the class legend) for predicted batches.

    Class names, colours and the ignore index come from the trainer's data module when it has them.

    Args:
        output_dir: folder for the pictures; None = ``<log dir>/predictions``.
        max_images: stop after this many pictures (None = all).
    """

    def __init__(self, output_dir: str | None = None, max_images: int | None = 32) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.max_images = max_images
        self.written: list[Path] = []

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.written = []
        names, colors, _ = self._classes(trainer, pl_module)
        folder = self._folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        legend(names, colors).save(folder / "legend.png")

    @staticmethod
    def _classes(trainer: Trainer, pl_module: LightningModule) -> tuple[list[str], list, int | None]:
        """Class names, colours and ignore index from the data module (or the task, or defaults)."""
        data = trainer.datamodule
        num_classes = int(pl_module.num_classes)
        names = getattr(data, "class_names", None) or getattr(pl_module, "class_names", None)
        colors = (getattr(data, "colors", None) or getattr(pl_module, "palette", None)
                  or default_palette(num_classes))  # fmt: skip
        ignore_index = getattr(data, "ignore_index", getattr(pl_module, "ignore_index", None))
        return list(names or [f"class{i}" for i in range(num_classes)]), list(colors), ignore_index

    def _folder(self, trainer: Trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions"

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        names, colors, ignore_index = self._classes(trainer, pl_module)
        folder = self._folder(trainer)
        for i, prediction in enumerate(outputs["prediction"]):
            if self.max_images is not None and len(self.written) >= self.max_images:
                return
            masks = batch.get("mask")
            target = None if masks is None else masks[i].cpu().numpy()
            mean, std = getattr(pl_module, "mean", MEAN), getattr(pl_module, "std", STD)
            image = denormalize(batch["image"][i], mean, std)
            prediction = prediction.cpu().numpy().astype(np.int64)
            if "size" in batch:  # a padded batch of images of different sizes: each at its own size
                h, w = (int(v) for v in batch["size"][i])
                image, prediction = image[:h, :w], prediction[:h, :w]
                target = None if target is None else target[:h, :w]
            if image.shape[:2] != prediction.shape:  # the network ran at the training size
                image = cv2.resize(image, prediction.shape[::-1], interpolation=cv2.INTER_LINEAR)
            picture = side_by_side(image, target, prediction, names, colors, ignore_index)
            stem = Path(batch["path"][i]).stem if "path" in batch else f"{batch_idx:04d}_{i:02d}"
            path = folder / f"{stem}.png"
            picture.save(path)
            self.written.append(path)

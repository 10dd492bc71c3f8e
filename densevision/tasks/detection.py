"""Object detection / instance segmentation task around a torchvision-style detector.

The model takes ``(images: list[(3, H, W)], targets: list[dict])`` and returns a loss dict in train mode
and a list of detections (``boxes``, ``labels``, ``scores``[, ``masks``]) in eval mode, as torchvision's
Faster R-CNN, Mask R-CNN, RetinaNet and FCOS (and densevision's DenseNet-FPN builders on them) do.
Validation computes COCO mAP with pycocotools on the validation dataset's ground truth; it is logged
(``val/AP``, ``val/AP50``, ... and ``val/segm_AP``... for masks) and appended to a JSON file each epoch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from densevision.datasets.coco_eval import detections_to_coco, evaluate_coco
from densevision.tasks.base import BaseTask, default_optimizer

Batch = tuple[list[Tensor], list[dict[str, Tensor]]]


def gather_objects(obj: object) -> list[object]:
    """``obj`` from every process (a list of one outside distributed runs)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


class DetectionTask(BaseTask):
    """LightningModule for torchvision-style detectors with COCO evaluation.

    Args:
        model: detector (see module docstring).
        optimizer: ``params -> Optimizer``.
        lr_scheduler: ``optimizer -> LRScheduler`` or None; stepped once per epoch.
        metrics_file: per-epoch COCO metrics are appended to this file in the run's log folder.
        mask_threshold: mask probability threshold for the segm results.
        class_names: name of each label, ``"__background__"`` first (linked from the data module; kept in
            the checkpoint so ``densevision predict`` draws names).
        category_ids: the COCO category id of each label, 0 first (linked from the data module; kept in
            the checkpoint so ``densevision predict`` writes the ids Lightning's predict writes).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        *,
        metrics_file: str = "coco_metrics.json",
        mask_threshold: float = 0.5,
        class_names: Sequence[str] | None = None,
        category_ids: Sequence[int] | None = None,
    ) -> None:
        super().__init__(model, optimizer, lr_scheduler)
        self.save_config_hyperparameters()
        self.class_names = list(class_names) if class_names else None
        self.category_ids = [int(i) for i in category_ids] if category_ids else None
        self.metrics_file = metrics_file
        self.mask_threshold = mask_threshold
        self._val_results: dict[int, list[dict]] = {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keeps the label space in the checkpoint's hyper-parameters, where ``load_task`` (and Lightning's
        ``--ckpt_path`` parsing) read constructor arguments from. Not ``save_hyperparameters``: under
        LightningCLI it records the whole config section, links the task does not take included."""
        labels = {"class_names": self.class_names, "category_ids": self.category_ids}
        labels = {k: v for k, v in labels.items() if v}
        checkpoint.setdefault("hyper_parameters", {}).update(labels)

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self.model(images)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        batch_size = len(images)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=batch_size)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_results = {}

    def on_test_epoch_start(self) -> None:
        self._val_results = {}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: Batch, stage: str) -> None:
        images, targets = batch
        dataset = self._dataset(stage)
        for image, target, detection in zip(images, targets, self.model(images), strict=True):
            image_id = int(target["image_id"])
            self._val_results[image_id] = detections_to_coco(
                detection, image_id=image_id, input_size=tuple(image.shape[-2:]),
                orig_size=tuple(target["orig_size"].tolist()),
                label_to_category_id=dataset.label_to_category_id, mask_threshold=self.mask_threshold)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _eval_epoch_end(self, stage: str) -> None:
        per_image: dict[int, list[dict]] = {}
        # a distributed sampler pads with repeated images: keep each image's results once
        for part in gather_objects(self._val_results):
            for image_id, results in part.items():
                per_image.setdefault(image_id, results)
        self._val_results = {}
        if not per_image:
            return
        metrics = self.compute_metrics(per_image, stage)
        # every process computed the same numbers from the gathered results: sync_dist averages equal values
        # (and keeps Lightning from asking for it on every epoch-level value under DDP)
        shown = {"AP", "AP50"}  # in the progress bar; all of them in the loggers
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items() if k not in shown}, sync_dist=True)
        self.log_dict(
            {f"{stage}/{k}": metrics[k] for k in shown if k in metrics}, sync_dist=True, prog_bar=True
        )
        log_dir = self.trainer.log_dir  # a collective under DDP (broadcast): every process must ask
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:
            self._append_metrics(metrics, log_dir, stage)

    def compute_metrics(self, per_image: dict[int, list[dict]], stage: str = "val") -> dict[str, float]:
        """COCO metrics of ``per_image`` results on those images of the ``stage`` split (bbox, and segm
        when the results carry masks)."""
        coco_gt = self._dataset(stage).coco
        results = [r for image_results in per_image.values() for r in image_results]
        image_ids = sorted(per_image)
        metrics = evaluate_coco(coco_gt, results, iou_type="bbox", image_ids=image_ids)
        if results and "segmentation" in results[0]:
            segm = evaluate_coco(coco_gt, results, iou_type="segm", image_ids=image_ids)
            metrics.update({f"segm_{k}": v for k, v in segm.items()})
        return metrics

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict]:
        """Per image: the input ``image``, its ``target`` and the model's ``detection`` (on the CPU)."""
        images, targets = batch
        detections = self.model(images)
        return [
            {"image": image.cpu(), "target": target, "detection": {k: v.cpu() for k, v in det.items()}}
            for image, target, det in zip(images, targets, detections, strict=True)
        ]

    def _dataset(self, stage: str):
        loaders = {
            "val": self.trainer.val_dataloaders,
            "test": self.trainer.test_dataloaders,
        }.get(stage, self.trainer.predict_dataloaders)
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        return loader.dataset

    def _append_metrics(self, metrics: dict[str, float], log_dir: str | None, stage: str = "val") -> None:
        name = self.metrics_file if stage == "val" else f"{stage}_{self.metrics_file}"
        path = Path(log_dir or self.trainer.default_root_dir) / name
        history = json.loads(path.read_text()) if path.is_file() else []
        history.append({"epoch": self.current_epoch, "step": self.global_step, **metrics})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(history, indent=1))

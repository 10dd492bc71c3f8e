"""Lightning data modules for COCO-format detection: any images + COCO json, and the embedded dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict, Unpack

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from densevision.datasets.coco_detection import (
    CocoDetection,
    detection_collate,
    load_coco_json,
    split_image_ids,
)
from densevision.datasets.detection_transforms import detection_eval_transforms, detection_train_transforms
from densevision.datasets.shapes_detection import CATEGORY_IDS, CLASSES, ensure_shapes_detection_dataset


class DetectionDataOptions(TypedDict, total=False):
    """The training and loader options of :class:`CocoDetectionDataModule` that the data modules of
    particular datasets pass on unchanged (defaults there). Typed keywords (PEP 692): a typo in a YAML
    config still fails when it is parsed."""

    image_size: int | None
    hflip: float
    scale_limit: float
    min_visibility: float
    color_jitter: float
    batch_size: int
    num_workers: int


class CocoDetectionDataModule(LightningDataModule):
    """Train / val / test (and predict = val) loaders over COCO-format data.

    Args:
        train_images: folder the train json's ``file_name`` are relative to.
        train_annotations: train COCO instances json.
        val_images: folder of the validation images; None = ``train_images``.
        val_annotations: validation json; None = a seeded ``val_fraction`` of the train json's images.
        test_images, test_annotations: a labelled test split for ``densevision test`` (images folder and
            COCO json); None = the validation split.
        val_fraction: share of the train images held out for validation when there is no val json.
        split_seed: seed of that split.
        image_size: letterbox size (longest side, padded square) for training and evaluation; None keeps
            the images as read (the detector's own ``min_size``/``max_size`` resize still applies).
        hflip: horizontal flip probability in training.
        scale_limit: random scale range (1 +- scale_limit) in training.
        min_visibility: boxes keeping less than this fraction of their area after a crop are dropped.
        color_jitter: brightness / contrast / saturation jitter in training; 0 = off.
        with_masks: return instance masks (Mask R-CNN).
        batch_size: images per batch.
        num_workers: data loader worker processes.
    """

    def __init__(
        self,
        train_images: str,
        train_annotations: str,
        val_images: str | None = None,
        val_annotations: str | None = None,
        *,
        test_images: str | None = None,
        test_annotations: str | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        image_size: int | None = None,
        hflip: float = 0.5,
        scale_limit: float = 0.25,
        min_visibility: float = 0.3,
        color_jitter: float = 0.2,
        with_masks: bool = False,
        batch_size: int = 4,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train_images, self.train_annotations = Path(train_images), Path(train_annotations)
        self.val_images = Path(val_images) if val_images is not None else self.train_images
        self.val_annotations = Path(val_annotations) if val_annotations is not None else None
        self.test_annotations = Path(test_annotations) if test_annotations is not None else None
        self.test_images = Path(test_images) if test_images is not None else self.val_images
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.image_size, self.with_masks = image_size, with_masks
        self.train_transforms = detection_train_transforms(
            image_size, hflip=hflip, scale_limit=scale_limit, min_visibility=min_visibility,
            color_jitter=color_jitter)
        self.eval_transforms = detection_eval_transforms(image_size)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_dataset: CocoDetection | None = None
        self.val_dataset: CocoDetection | None = None
        self.test_dataset: CocoDetection | None = None

    @property
    def class_names(self) -> list[str]:
        """``["__background__", name of label 1, ...]``, read from the train json (no setup needed)."""
        categories = sorted(load_coco_json(self.train_annotations)["categories"], key=lambda c: c["id"])
        return ["__background__"] + [c["name"] for c in categories]

    @property
    def category_ids(self) -> list[int]:
        """The COCO category id of each label (0 for the background slot), as ``label_to_category_id``."""
        categories = load_coco_json(self.train_annotations)["categories"]
        return [0] + sorted(int(c["id"]) for c in categories)

    @property
    def num_classes(self) -> int:
        """Classes including background, as the detector's ``num_classes`` must be."""
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        train_ids = val_ids = None
        if self.val_annotations is None:
            train_ids, val_ids = split_image_ids(self.train_annotations, self.val_fraction, self.split_seed)
        val_json = self.val_annotations or self.train_annotations
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = CocoDetection(self.train_images, self.train_annotations,
                                               transforms=self.train_transforms, with_masks=self.with_masks,
                                               image_ids=train_ids)
        if self.val_dataset is None:
            self.val_dataset = CocoDetection(self.val_images, val_json, transforms=self.eval_transforms,
                                             with_masks=self.with_masks, image_ids=val_ids)
            if self.val_dataset.class_names != self.class_names:
                raise ValueError(f"categories of {val_json} ({self.val_dataset.class_names[1:]}) differ from "
                                 f"those of {self.train_annotations} ({self.class_names[1:]})")
        if stage == "test" and self.test_dataset is None:
            if self.test_annotations is None:
                self.test_dataset = self.val_dataset
            else:
                self.test_dataset = CocoDetection(self.test_images, self.test_annotations,
                                                  transforms=self.eval_transforms, with_masks=self.with_masks)
                names = self.test_dataset.class_names
                if names != self.class_names:
                    raise ValueError(f"categories of {self.test_annotations} ({names[1:]}) differ from those "
                                     f"of {self.train_annotations} ({self.class_names[1:]})")

    def _loader(self, dataset: CocoDetection, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=detection_collate, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)


class ShapesDetectionDataModule(CocoDetectionDataModule):
    """The embedded dataset (``synthetic_detection``), generated into ``root`` on first use.

    Args:
        root: dataset folder, e.g. ``data/shapes_detection``.
        seed, num_train, num_val, dataset_image_size, max_objects: generation (see
            ``ensure_shapes_detection_dataset``); a change regenerates the data.
        Other arguments as ``CocoDetectionDataModule``.
    """

    def __init__(
        self,
        root: str = "data/shapes_detection",
        *,
        seed: int = 0,
        num_train: int = 240,
        num_val: int = 60,
        dataset_image_size: int = 160,
        max_objects: int = 6,
        with_masks: bool = False,
        **options: Unpack[DetectionDataOptions],
    ) -> None:
        self.root = Path(root)
        self.generation = {"seed": seed, "num_train": num_train, "num_val": num_val,
                           "image_size": dataset_image_size, "max_objects": max_objects}
        super().__init__(
            str(self.root / "images"), str(self.root / "annotations" / "train.json"),
            str(self.root / "images"), str(self.root / "annotations" / "val.json"), with_masks=with_masks,
            **options)  # fmt: skip

    def prepare_data(self) -> None:
        ensure_shapes_detection_dataset(self.root, **self.generation)

    @property
    def class_names(self) -> list[str]:
        # known without the files, which are only generated in prepare_data
        return ["__background__"] + [name for name, _ in CLASSES]

    @property
    def category_ids(self) -> list[int]:
        return [0, *CATEGORY_IDS]

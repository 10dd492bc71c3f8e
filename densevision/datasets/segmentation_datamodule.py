"""LightningDataModules for segmentation folders: any folder, CamVid, and the generated "shapes" set.

The data module owns the label space (``num_classes``, ``ignore_index``, ``class_names``, ``palette``), the
input normalisation (``mean``, ``std``) and the optional class weights; ``densevision.cli`` links them into
the task and its model, so a config states them once and a run saves them. A dataset with a layout of its
own (``densevision.datasets.cityscapes``, ``voc``, ``ade20k``) overrides :meth:`find_samples` and sets
``label_map``; everything else (checks, transforms, loaders, class weights) is this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Literal, TypedDict, Unpack

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, default_collate

from densevision.datasets.segmentation import (
    CAMVID_CLASSES,
    CAMVID_COLORS,
    CAMVID_IGNORE_INDEX,
    Color,
    LabelMap,
    Sample,
    SegmentationDataError,
    SegmentationFolder,
)
from densevision.datasets.shapes_segmentation import (
    SHAPES_CLASSES,
    SHAPES_COLORS,
    ShapesGeneration,
    ensure_shapes_segmentation_dataset,
)
from densevision.datasets.transforms import (
    MEAN,
    STD,
    AugmentPreset,
    EvaluationTransform,
    segmentation_transform,
)
from densevision.visualize import default_palette

ClassWeighting = Literal["none", "median_frequency", "sqrt_median_frequency"]
HoldoutSplit = Literal["val", "test"]


class SegmentationDataOptions(TypedDict, total=False):
    """The options of :class:`SegmentationDataModule` that every dataset's module passes on unchanged
    (over each dataset's own defaults: ``{**DEFAULTS, **options}``). Typed keywords (PEP 692): a typo in
    a YAML config still fails when it is parsed.

    Args:
        batch_size: training batch size (evaluation uses the same).
        num_workers: DataLoader worker processes.
        augment: training augmentation preset (``densevision.datasets.transforms``): ``flip`` needs no other
            setting; the ``scale_crop*`` presets need ``crop_size``.
        crop_size: (height, width) of training crops for the ``scale_crop*`` presets.
        scale_range: random scale range of the ``scale_crop*`` presets.
        resize: (height, width) every image is resized to first (e.g. a reduced CPU resolution); None = as
            is. Training masks are resized with their images; evaluation keeps the masks at their own size
            and scores logits resized to them. Linked into the task as its ``input_size``, so a checkpoint
            predicts at the size it trained at.
        class_weighting: loss weights from the training masks: ``median_frequency`` (SegNet, FC-DenseNet),
            ``sqrt_median_frequency`` (their square roots: thin classes still count, large ones lose less),
            or ``none``.
        skip_bad: drop bad samples (with a warning summary) instead of raising.
        train_split, val_split, test_split, predict_split: image sub-folder names.
        holdout_sequence: a file-name prefix (a video sequence, e.g. CamVid's ``0006R0``) whose frames
            (from the train and val splits) no training step sees: a measure of generalisation to scenes
            the model never saw; None = the splits as they are.
        holdout_split: where the held-out frames go. ``val``: training uses train + val without them and
            validation (and predict, when it reads the val split) them alone. ``test``: training uses the
            train split without them, validation the val split without them, and ``test`` them alone, so
            one run is scored both on its val split (``fit``) and on the unseen sequence (``test``).
        mean, std: the per-channel normalisation the transforms apply (default ImageNet's).
    """

    batch_size: int
    num_workers: int
    augment: AugmentPreset
    crop_size: tuple[int, int] | None
    scale_range: tuple[float, float]
    resize: tuple[int, int] | None
    class_weighting: ClassWeighting
    skip_bad: bool
    train_split: str
    val_split: str
    test_split: str
    predict_split: str
    holdout_sequence: str | None
    holdout_split: HoldoutSplit
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class LabelSpace(TypedDict):
    """A dataset's fixed label space, the arguments of :class:`SegmentationDataModule` it sets for its
    users (``label_space`` builds one)."""

    num_classes: int
    ignore_index: int | None
    class_names: Sequence[str]
    colors: Sequence[Color]


def label_space(class_names: Sequence[str], colors: Sequence[Color], ignore_index: int | None) -> LabelSpace:
    """The label space of a dataset with ``class_names`` (one class each), their ``colors`` and the mask
    value that is not scored."""
    return LabelSpace(
        num_classes=len(class_names), ignore_index=ignore_index, class_names=class_names, colors=colors
    )


# The recipe the large benchmarks (Cityscapes, VOC, ADE20K) train with in DeepLab and mmsegmentation:
# random 0.5-2x rescaling, then fixed-size crops; their modules add the batch and crop sizes.
SCALE_CROP_RECIPE: SegmentationDataOptions = {
    "num_workers": 4, "augment": "scale_crop", "scale_range": (0.5, 2.0)
}


def padding_collate(batch: list[dict], ignore_index: int | None) -> dict:
    """``default_collate``, except that samples of different sizes (valid data: evaluation keeps each
    image's size unless ``resize`` is set) are padded at the right and bottom to the largest: images with
    0, masks with ``ignore_index`` so padding counts in neither loss nor metrics. A padded batch carries
    ``size`` (N, 2), each sample's own (H, W).

    Raises:
        SegmentationDataError: sizes differ and there is no ``ignore_index`` to pad masks with; names the
            files and their sizes.
    """
    sizes = [tuple(item["image"].shape[-2:]) for item in batch]
    if len(set(sizes)) == 1:
        return default_collate(batch)
    if ignore_index is None:
        pairs = zip(batch, sizes, strict=True)
        listed = ", ".join(f"{item.get('path', '?')} ({w}x{h})" for item, (h, w) in pairs)
        raise SegmentationDataError(
            f"one batch holds images of different sizes: {listed}; without an ignore_index the masks cannot "
            "be padded. Set data.init_args.resize [H, W], data.init_args.batch_size 1, or an ignore_index"
        )
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    padded = []
    for item, (h, w) in zip(batch, sizes, strict=True):
        pad = (0, width - w, 0, height - h)
        padded.append({
            **item,
            "image": F.pad(item["image"], pad, value=0.0),
            "mask": F.pad(item["mask"], pad, value=ignore_index),
            "size": torch.tensor([h, w]),
        })
    return default_collate(padded)


class SegmentationDataModule(LightningDataModule):
    """Train / val / test / predict splits of a SegNet-layout folder (``<split>/`` + ``<split>annot/``).

    Args:
        root: dataset folder.
        num_classes: scored classes.
        ignore_index: mask value that is not scored (void), or None.
        class_names: one name per class (default ``class0``...).
        colors: one RGB colour per class for pictures (default: generated).
        Others (``batch_size`` ... ``std``): see :class:`SegmentationDataOptions`.

    Attributes:
        palette: one RGB colour per class (``colors``, or a generated palette when None), for pictures.
        mean, std: the per-channel normalisation the transforms apply (ImageNet's, which torchvision's
            DenseNet weights expect), linked into the task so predictions normalise alike.
        label_map: the dataset's stored-id -> training-id mapping applied to every mask, or None.
    """

    label_map: LabelMap | None = None

    def __init__(
        self,
        root: str,
        *,
        num_classes: int,
        ignore_index: int | None = None,
        class_names: Sequence[str] | None = None,
        colors: Sequence[Color] | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        augment: AugmentPreset = "flip",
        crop_size: tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (0.75, 1.5),
        resize: tuple[int, int] | None = None,
        class_weighting: ClassWeighting = "none",
        skip_bad: bool = False,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        predict_split: str = "val",
        holdout_sequence: str | None = None,
        holdout_split: HoldoutSplit = "val",
        mean: tuple[float, float, float] = MEAN,
        std: tuple[float, float, float] = STD,
    ) -> None:
        super().__init__()
        if holdout_split not in ("val", "test"):
            raise ValueError(f"holdout_split={holdout_split!r}: expected 'val' or 'test'")
        self.root = Path(root)
        self.holdout_sequence = holdout_sequence
        self.holdout_split = holdout_split
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names else [f"class{i}" for i in range(num_classes)]
        self.colors = [tuple(c) for c in colors] if colors else list(default_palette(num_classes))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.class_weighting = class_weighting
        self.skip_bad = skip_bad
        self.splits = {"train": train_split, "val": val_split, "test": test_split, "predict": predict_split}
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.train_transform = segmentation_transform(
            augment, resize=resize, crop_size=crop_size, scale_range=scale_range, ignore_index=ignore_index,
            mean=self.mean, std=self.std,
        )  # fmt: skip
        self.resize = None if resize is None else (int(resize[0]), int(resize[1]))
        self.eval_transform = EvaluationTransform(resize, self.mean, self.std)
        self._datasets: dict[str, SegmentationFolder] = {}

    @property
    def palette(self) -> list[Color]:
        """The class colours (``colors``), under the name the task's ``palette`` argument is linked from."""
        return self.colors

    def dataset(self, stage: str) -> SegmentationFolder:
        """The (cached) dataset of ``stage``: train, val, test or predict."""
        if stage not in self._datasets:
            self.prepare_data()
            split, keep = self._split_of(stage)
            self._datasets[stage] = SegmentationFolder(
                self.root,
                split,
                num_classes=self.num_classes,
                ignore_index=self.ignore_index,
                class_names=self.class_names,
                colors=self.colors,
                transform=self.train_transform if stage == "train" else self.eval_transform,
                skip_bad=self.skip_bad,
                keep=keep,
                samples=self.find_samples(stage, split) if isinstance(split, str) else None,
                label_map=self.label_map,
            )
        return self._datasets[stage]

    def find_samples(self, stage: str, split: str) -> list[Sample] | None:
        """The (image, mask) files of ``split`` (read for ``stage``) in the dataset's own layout; None =
        the SegNet layout (``<split>/`` + ``<split>annot/``). Datasets with a layout of their own override
        this."""
        return None

    def _split_of(self, stage: str) -> tuple[str | list[str], _HoldOut | None]:
        """The sub-folder(s) ``stage`` reads and, with ``holdout_sequence``, which frames it keeps."""
        split: str = self.splits[stage]
        seq = self.holdout_sequence
        both = [self.splits["train"], self.splits["val"]]
        if seq is None:
            return split, None
        if self.holdout_split == "val":
            if split not in both:
                return split, None
            return both, _HoldOut(seq, held_out=stage != "train")
        if stage == "test":
            return both, _HoldOut(seq, held_out=True)
        if split in both:
            return split, _HoldOut(seq, held_out=False)
        return split, None

    @cached_property
    def class_weights(self) -> list[float] | None:
        """Loss weights per class from the training masks (``class_weighting``), or None."""
        if self.class_weighting == "none":
            return None
        weights = self.dataset("train").median_frequency_weights()
        if self.class_weighting == "sqrt_median_frequency":
            return [w**0.5 for w in weights]
        return weights

    def setup(self, stage: str) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for name in needed[stage]:
            self.dataset(name)

    def _loader(self, stage: str) -> DataLoader:
        return DataLoader(
            self.dataset(stage),
            batch_size=self.batch_size,
            shuffle=stage == "train",
            drop_last=stage == "train" and len(self.dataset(stage)) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=partial(padding_collate, ignore_index=self.ignore_index),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


class _HoldOut:
    """Keeps the file names that start with ``prefix`` (``held_out``) or those that do not."""

    def __init__(self, prefix: str, held_out: bool) -> None:
        self.prefix, self.held_out = prefix, held_out

    def __call__(self, name: str) -> bool:
        return name.startswith(self.prefix) == self.held_out

    def __repr__(self) -> str:
        return f"holdout_sequence={self.prefix!r} ({'its frames' if self.held_out else 'the other frames'})"


CAMVID_LABEL_SPACE = label_space(CAMVID_CLASSES, CAMVID_COLORS, CAMVID_IGNORE_INDEX)
# FC-DenseNet's CamVid recipe: 224x224 random crops (no rescaling), flips, batch 3.
CAMVID_DEFAULTS: SegmentationDataOptions = {
    "batch_size": 3, "augment": "scale_crop", "crop_size": (224, 224), "scale_range": (1.0, 1.0),
}  # fmt: skip


class CamVidDataModule(SegmentationDataModule):
    """CamVid, 11 classes + void (11, ignored), SegNet layout; defaults follow FC-DenseNet's recipe
    (224x224 random crops, flips, batch 3). Its val split is all sequence 0016E5, which also gives 204 of
    the 367 training frames; ``holdout_sequence="0006R0"`` scores on a sequence training never saw.

    Args: as :class:`SegmentationDataModule`, without the label space (fixed by CamVid), over the defaults
        ``CAMVID_DEFAULTS``; ``test_split`` names the folder ``densevision test`` scores (``val`` where a
        copy has no ``test``).
    """

    def __init__(
        self, root: str = "../shared/data/camvid", **options: Unpack[SegmentationDataOptions]
    ) -> None:
        super().__init__(root, **CAMVID_LABEL_SPACE, **{**CAMVID_DEFAULTS, **options})


SHAPES_LABEL_SPACE = label_space(SHAPES_CLASSES, SHAPES_COLORS, 255)


class ShapesDataOptions(ShapesGeneration, SegmentationDataOptions, total=False):
    """The options of :class:`ShapesDataModule`: the generation parameters and the data module's."""


class ShapesDataModule(SegmentationDataModule):
    """The generated "shapes" dataset (``datasets.shapes_segmentation``), written to ``root`` on first use.

    Args:
        root: where the dataset is generated (default ``data/shapes``).
        seed, image_size, num_train, num_val, num_test: generation parameters (defaults: those of
            ``ensure_shapes_segmentation_dataset``); a change regenerates.
        Others: as :class:`SegmentationDataModule` (``batch_size`` 8).
    """

    def __init__(self, root: str = "data/shapes", **options: Unpack[ShapesDataOptions]) -> None:
        generation = {key: options.pop(key) for key in ShapesGeneration.__optional_keys__ & options.keys()}
        super().__init__(root, **SHAPES_LABEL_SPACE, **{"batch_size": 8, **options})
        self.generation: ShapesGeneration = generation

    def prepare_data(self) -> None:
        ensure_shapes_segmentation_dataset(self.root, **self.generation)

"""ADE20K SceneParsing (Zhou et al., CVPR 2017; the MIT Scene Parsing Benchmark's ``ADEChallengeData2016``).

Layout (``root`` is ``ADEChallengeData2016`` from ``ADEChallengeData2016.zip``)::

    root/images/training/ADE_train_<8 digits>.jpg        20210 images
    root/images/validation/ADE_val_<8 digits>.jpg        2000 images
    root/annotations/training/ADE_train_<8 digits>.png   8-bit: 0 = other, 1..150 = the classes
    root/annotations/validation/ADE_val_<8 digits>.png

The benchmark scores 150 classes and ignores 0 ("other objects"): ``ADE20K_LABEL_MAP`` maps stored 0 to the
ignore index 255 and 1..150 to 0..149 (mmsegmentation's ``reduce_zero_label``; the benchmark's own
``sceneparsing`` toolkit scores the same). Each val image is scored at its own size. Class names and
colours are the benchmark's ``objectInfo150`` order, as mmsegmentation lists them.
"""

from __future__ import annotations

from typing import Unpack

from densevision.datasets.segmentation import LabelMap, Sample, find_samples
from densevision.datasets.segmentation_datamodule import (
    SCALE_CROP_RECIPE,
    SegmentationDataModule,
    SegmentationDataOptions,
    label_space,
)

ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence",
    "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
ADE20K_COLORS: tuple[tuple[int, int, int], ...] = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7),
    (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224),
    (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6),
    (10, 255, 71), (255, 41, 10), (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20),
    (0, 163, 255), (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200),
    (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0),
    (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102),
    (255, 173, 0), (255, 0, 20), (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204),
    (0, 255, 194), (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0),
    (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160),
    (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235),
    (133, 255, 0), (255, 0, 235), (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212),
    (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204),
    (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184),
    (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)  # fmt: skip
IGNORE_INDEX = 255
ADE20K_LABEL_MAP = LabelMap(
    [IGNORE_INDEX, *range(len(ADE20K_CLASSES))],
    stored="ADE20K SceneParsing annotation",
    fix="use ADEChallengeData2016/annotations (0 = other, 1..150 = classes), not the full ADE20K index's "
    "*_seg.png files (thousands of classes, colour-coded)",
)


# The benchmark's usual recipe (mmsegmentation's ADE20K schedule): 512x512 crops of 0.5-2x rescaled images.
ADE20K_LABEL_SPACE = label_space(ADE20K_CLASSES, ADE20K_COLORS, IGNORE_INDEX)
ADE20K_DEFAULTS: SegmentationDataOptions = {
    **SCALE_CROP_RECIPE, "batch_size": 16, "crop_size": (512, 512), "train_split": "training",
    "val_split": "validation", "test_split": "validation", "predict_split": "validation",
}  # fmt: skip


class ADE20KDataModule(SegmentationDataModule):
    """ADE20K SceneParsing: 150 classes, "other" (stored 0) ignored, stored 1..150 trained as 0..149.

    Args:
        root: ``ADEChallengeData2016``.
        train_split, val_split, test_split, predict_split: the sub-folder of ``images/`` and
            ``annotations/`` each stage reads (``training``, ``validation``; the test images have no
            public labels, so test reads ``validation``).
        Others: :class:`SegmentationDataOptions`, over the defaults ``ADE20K_DEFAULTS``.
    """

    label_map = ADE20K_LABEL_MAP

    def __init__(
        self, root: str = "data/ADEChallengeData2016", **options: Unpack[SegmentationDataOptions]
    ) -> None:
        super().__init__(root, **ADE20K_LABEL_SPACE, **{**ADE20K_DEFAULTS, **options})

    def find_samples(self, stage: str, split: str) -> list[Sample]:
        return find_samples(self.root / "images" / split, self.root / "annotations" / split)

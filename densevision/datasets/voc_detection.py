"""PASCAL VOC detection (Everingham et al., IJCV 2010) from its XML boxes, as COCO json for the COCO readers.

Layout (``root`` is ``VOCdevkit/VOC2007`` or ``VOCdevkit/VOC2012``)::

    root/JPEGImages/<id>.jpg
    root/Annotations/<id>.xml              <object><name>, <difficult>, <bndbox> xmin ymin xmax ymax
    root/ImageSets/Main/<split>.txt        train, val, trainval (and test for VOC2007)

``voc_xml_to_coco`` writes the 20 classes as COCO categories 1..20 (``VOC_DETECTION_CLASSES`` order, the
devkit's) and each box as COCO ``[x, y, w, h]`` in 0-based pixels: VOC's 1-based, inclusive corners
become ``x = xmin - 1``, ``w = xmax - xmin + 1`` (as detectron2 reads them). ``difficult`` boxes are kept
as ``iscrowd: 1``: left out of training targets, and ignored by the evaluation (neither a miss nor a false
positive), as the VOC devkit treats them. ``VOCDetectionDataModule`` converts once into ``annotations_dir``
and then is a :class:`CocoDetectionDataModule`; its evaluation reports COCO AP and VOC's mAP@0.5
(``AP50_VOC``, see ``densevision.datasets.coco_eval``).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Unpack

from densevision.datasets.coco_detection import CocoFormatError
from densevision.datasets.detection_datamodule import CocoDetectionDataModule, DetectionDataOptions
from densevision.datasets.image_io import ImageFileError, check_image_file
from densevision.datasets.voc import VOC_CLASSES, read_split_file
from densevision.log import get_logger

logger = get_logger(__name__)

VOC_DETECTION_CLASSES: tuple[str, ...] = VOC_CLASSES[1:]  # the 20 object classes, without background
VOC_CATEGORY_IDS: tuple[int, ...] = tuple(range(1, len(VOC_DETECTION_CLASSES) + 1))


class VOCAnnotationError(CocoFormatError):
    """A VOC XML file that cannot be used; the message names the file and the field."""


def _number(obj: ET.Element, field: str, xml: Path) -> float:
    node = obj.find(f"bndbox/{field}")
    try:
        return float(node.text)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError) as err:
        raise VOCAnnotationError(f"{xml}: an object's bndbox/{field} is missing or not a number") from err


def read_voc_xml(xml: Path) -> list[dict]:
    """The objects of one VOC annotation file as ``{"name", "difficult", "bbox": [x, y, w, h]}``.

    Raises:
        VOCAnnotationError: malformed XML, an unknown class name or a box field missing.
    """
    try:
        tree = ET.parse(xml)
    except ET.ParseError as err:
        raise VOCAnnotationError(f"{xml}: malformed XML ({err})") from err
    objects = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_DETECTION_CLASSES:
            raise VOCAnnotationError(
                f"{xml}: object name {name!r} is not one of the 20 VOC classes "
                f"({', '.join(VOC_DETECTION_CLASSES)}); fix the <name> or drop the object"
            )
        xmin, ymin, xmax, ymax = (_number(obj, f, xml) for f in ("xmin", "ymin", "xmax", "ymax"))
        objects.append({
            "name": name,
            "difficult": (obj.findtext("difficult") or "0").strip() == "1",
            "bbox": [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1],
        })
    return objects


def voc_xml_to_coco(root: str | Path, split: str, *, strict: bool = False) -> dict:
    """COCO dataset dict of the images ``ImageSets/Main/<split>.txt`` lists (``file_name`` relative to
    ``root/JPEGImages``). A listed image whose JPEG or XML is missing or unreadable is skipped and counted
    in one warning (``strict``: the first raises).

    Raises:
        FileNotFoundError: the split file is missing (names the split files there).
        VOCAnnotationError: a malformed XML file or unknown class name (always: a wrong score otherwise).
    """
    root = Path(root)
    listed = read_split_file(root / "ImageSets" / "Main" / f"{split}.txt")
    dataset: dict = {"images": [], "annotations": [], "categories": [
        {"id": cid, "name": name, "supercategory": "voc"}
        for cid, name in zip(VOC_CATEGORY_IDS, VOC_DETECTION_CLASSES, strict=True)]}  # fmt: skip
    category = dict(zip(VOC_DETECTION_CLASSES, VOC_CATEGORY_IDS, strict=True))
    skipped: list[tuple[Path, str]] = []
    for name, where in listed:
        image, xml = root / "JPEGImages" / f"{name}.jpg", root / "Annotations" / f"{name}.xml"
        try:
            if not xml.is_file():
                raise ImageFileError(f"{where} names {name}, but {xml} does not exist")
            if not image.is_file():
                raise ImageFileError(f"{where} names {name}, but {image} does not exist")
            width, height = check_image_file(image)
        except ImageFileError as err:
            if strict:
                raise
            skipped.append((image, str(err)))
            continue
        image_id = len(dataset["images"]) + 1
        dataset["images"].append({"id": image_id, "file_name": image.name, "width": width, "height": height})
        for obj in read_voc_xml(xml):
            x, y, w, h = obj["bbox"]
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": image_id,
                "category_id": category[obj["name"]], "bbox": [x, y, w, h], "area": w * h,
                "iscrowd": int(obj["difficult"])})  # fmt: skip
    if skipped:
        listed_reasons = "\n  ".join(reason for _, reason in skipped[:10])
        logger.warning(f"{root}: skipped {len(skipped)} of {len(listed)} images listed in {split}.txt "
                       f"(strict=True stops at the first):\n  {listed_reasons}")
    return dataset


class VOCDetectionDataModule(CocoDetectionDataModule):
    """PASCAL VOC detection: the 20 classes from ``Annotations/*.xml``, split by ``ImageSets/Main``.

    Converted once into ``annotations_dir/<root folder>_<split>.json`` (again when the split file or the
    annotations folder is newer), then read as COCO data.

    Args:
        root: ``VOCdevkit/VOC2007`` (or ``VOC2012``).
        train_split, val_split: ``ImageSets/Main/<name>.txt`` (VOC2007: ``trainval`` and ``test``; VOC2012's
            test boxes are not public: use ``train`` and ``val``).
        annotations_dir: where the converted json files go (the dataset folder may be read-only).
        Others: as :class:`CocoDetectionDataModule`.
    """

    def __init__(
        self,
        root: str = "data/VOCdevkit/VOC2007",
        *,
        train_split: str = "trainval",
        val_split: str = "test",
        annotations_dir: str = "data/voc_coco",
        **options: Unpack[DetectionDataOptions],
    ) -> None:
        self.root, self.annotations_dir = Path(root), Path(annotations_dir)
        self.voc_splits = (train_split, val_split)
        images = str(self.root / "JPEGImages")
        super().__init__(
            images, str(self._json(train_split)), images, str(self._json(val_split)), **options)

    def _json(self, split: str) -> Path:
        return self.annotations_dir / f"{self.root.name}_{split}.json"

    def prepare_data(self) -> None:
        for split in self.voc_splits:
            out, split_file = self._json(split), self.root / "ImageSets" / "Main" / f"{split}.txt"
            sources = [split_file, self.root / "Annotations"]
            newest = max((p.stat().st_mtime for p in sources if p.exists()), default=0.0)
            if out.is_file() and out.stat().st_mtime >= newest:
                continue
            dataset = voc_xml_to_coco(self.root, split)
            out.parent.mkdir(parents=True, exist_ok=True)
            # several processes of a distributed run may convert at once: each file appears whole or not
            partial = out.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(dataset))
            os.replace(partial, out)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # also when a caller skips Lightning's prepare_data hook
        super().setup(stage)

    @property
    def class_names(self) -> list[str]:
        # known before conversion: the CLI links them when it builds the task
        return ["__background__", *VOC_DETECTION_CLASSES]

    @property
    def category_ids(self) -> list[int]:
        return [0, *VOC_CATEGORY_IDS]

"""Dataset converters: YOLO txt boxes and mask PNGs to COCO json, checked with pycocotools (the library
side of ``densevision convert``, described in ``densevision.apps.convert``)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from densevision.datasets.image_io import (
    IMAGE_SUFFIXES,
    ImageFileError,
    check_image_file,
    is_image_file,
    skipped_message,
)
from densevision.log import get_logger

logger = get_logger(__name__)


def read_class_names(path: str | Path) -> dict[int, str]:
    """Class index -> name from a YAML file (``names:`` or ``classes:``, a dict or a list) or a text file
    with one name per line (line ``i`` = index ``i``)."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(path.read_text()) or {}
        names = data.get("names", data.get("classes")) if isinstance(data, dict) else None
        if isinstance(names, list):
            return dict(enumerate(str(n) for n in names))
        if isinstance(names, dict):
            return {int(k): str(v) for k, v in names.items()}
        raise ValueError(f"{path}: expected a 'names' or 'classes' list/dict of class names")
    return {i: line.strip() for i, line in enumerate(path.read_text().splitlines()) if line.strip()}


def _image_files(images: Path) -> list[Path]:
    files = sorted(p for p in images.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {images}")
    return files


def _image_entry(image_id: int, path: Path, images: Path) -> dict:
    """The COCO ``images`` entry of ``path``, its size as densevision's reader returns it (EXIF applied).

    Raises:
        ImageFileError: the file is unreadable (empty, truncated, not an image, over the pixel limit).
    """
    width, height = check_image_file(path)
    name = path.relative_to(images).as_posix()
    return {"id": image_id, "file_name": name, "width": width, "height": height}


def _read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except (OSError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"mask {path}: cannot be read ({err})") from err


class _Inputs:
    """The images of a conversion, in order, with unreadable ones skipped and counted (``strict``: the
    first raises) and a progress bar."""

    def __init__(self, images: Path, strict: bool, desc: str) -> None:
        self.images, self.strict, self.desc = images, strict, desc
        self.files = _image_files(images)
        self.skipped: list[tuple[Path, str]] = []

    def skip(self, path: Path, err: ImageFileError) -> None:
        if self.strict:
            raise err
        self.skipped.append((path, str(err)))

    def __iter__(self):
        from tqdm import tqdm

        image_id = 0
        for path in tqdm(self.files, desc=self.desc, unit="image", disable=len(self.files) < 2):
            try:
                entry = _image_entry(image_id + 1, path, self.images)
            except ImageFileError as err:
                self.skip(path, err)
                continue
            image_id += 1
            yield path, entry

    def report(self) -> None:
        if self.skipped:
            logger.warning(skipped_message(self.skipped, len(self.files)))


def _no_labels_matched(kind: str, folder: Path, images: Path, example: Path, option: str) -> ValueError:
    return ValueError(
        f"no {kind} file in {folder} matches an image under {images} (looked for the image's path with "
        f"its suffix replaced, e.g. {example}); check {option}"
    )


def _parse_yolo_line(line: str, where: str, num_classes: int) -> tuple[int, list[float]]:
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"{where}: expected 'class cx cy w h', got {line!r}")
    try:
        cls, values = int(fields[0]), [float(v) for v in fields[1:]]
    except ValueError as err:
        raise ValueError(f"{where}: non-numeric value in {line!r}") from err
    if not 0 <= cls < num_classes:
        raise ValueError(f"{where}: class index {cls} outside the {num_classes} class names "
                         f"(0..{num_classes - 1})")
    return cls, values


def yolo_to_coco(images: Path, labels: Path, names: dict[int, str],
                 categories_from: Path | None = None, *, strict: bool = False) -> dict:
    """COCO dataset dict from YOLO detection labels (``labels/<image stem>.txt``); an image without a label
    file has no objects. Unreadable images are skipped with one warning (``strict``: the first raises).

    Raises:
        ValueError: no label file matches any image (a wrong ``labels`` folder), or a malformed line.
    """
    category_ids = {i: i + 1 for i in names}
    if categories_from is not None:
        by_name = {c["name"]: c["id"] for c in json.loads(Path(categories_from).read_text())["categories"]}
        missing = sorted(set(names.values()) - set(by_name))
        if missing:
            raise ValueError(f"class names {missing} are not categories of {categories_from}")
        category_ids = {i: by_name[n] for i, n in names.items()}
    dataset = {"images": [], "annotations": [],
               "categories": [{"id": category_ids[i], "name": n} for i, n in sorted(names.items())]}
    inputs, matched = _Inputs(images, strict, "yolo2coco"), 0
    for path, entry in inputs:
        image_id = entry["id"]
        dataset["images"].append(entry)
        label_file = labels / path.relative_to(images).with_suffix(".txt")
        matched += label_file.is_file()
        lines = label_file.read_text().splitlines() if label_file.is_file() else []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            cls, (cx, cy, w, h) = _parse_yolo_line(line, f"{label_file}:{number}", max(names) + 1)
            box = [(cx - w / 2) * entry["width"], (cy - h / 2) * entry["height"],
                   w * entry["width"], h * entry["height"]]
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": image_id, "category_id": category_ids[cls],
                "bbox": [round(v, 3) for v in box], "area": round(box[2] * box[3], 3), "iscrowd": 0})
    inputs.report()
    if not matched:
        example = labels / inputs.files[0].relative_to(images).with_suffix(".txt")
        raise _no_labels_matched("label", labels, images, example, "--labels")
    return dataset


def _segmentation(mask: np.ndarray, polygons: bool) -> dict | list[list[float]]:
    if polygons:
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        # a polygon needs at least 3 points (6 numbers)
        return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _instances(class_mask: np.ndarray, instance_mask: np.ndarray | None, background: int, ignore: int):
    """Yield (class index, binary uint8 mask) per instance."""
    if instance_mask is None:
        for cls in np.unique(class_mask):
            if cls in (background, ignore):
                continue
            count, components = cv2.connectedComponents((class_mask == cls).astype(np.uint8), connectivity=8)
            for component in range(1, count):
                yield int(cls), (components == component).astype(np.uint8)
        return
    for instance in np.unique(instance_mask):
        if instance == 0:
            continue
        region = instance_mask == instance
        classes = class_mask[region]
        classes = classes[(classes != background) & (classes != ignore)]
        if classes.size:
            yield int(np.bincount(classes).argmax()), region.astype(np.uint8)


def masks_to_coco(images: Path, masks: Path, names: dict[int, str] | None = None, *,
                  instance_masks: Path | None = None, polygons: bool = False, background: int = 0,
                  ignore_index: int = 255, min_area: int = 1, strict: bool = False) -> dict:
    """COCO dataset dict from class-index mask PNGs (``masks/<image stem>.png``), optionally with
    instance-id PNGs; images without a mask file are kept without annotations. Unreadable images and
    masks are skipped with one warning (``strict``: the first raises).

    Raises:
        ValueError: no mask file matches any image (a wrong ``masks`` folder), or a mask does not fit.
    """
    dataset: dict = {"images": [], "annotations": [], "categories": []}
    seen: set[int] = set()
    inputs, matched = _Inputs(images, strict, "masks2coco"), 0
    for path, entry in inputs:
        image_id = entry["id"]
        mask_file = masks / path.relative_to(images).with_suffix(".png")
        if not mask_file.is_file():
            dataset["images"].append(entry)
            continue
        matched += 1
        try:
            class_mask = _read_mask(mask_file)
            instance_mask = None
            if instance_masks is not None:
                instance_mask = _read_mask(instance_masks / mask_file.relative_to(masks))
        except ImageFileError as err:
            inputs.skip(path, err)
            continue
        dataset["images"].append(entry)
        if class_mask.shape[:2] != (entry["height"], entry["width"]) or class_mask.ndim != 2:
            raise ValueError(f"{mask_file}: mask of shape {class_mask.shape} does not match image "
                             f"{path} ({entry['height']}, {entry['width']}); expected a single-channel PNG")
        for cls, binary in _instances(class_mask, instance_mask, background, ignore_index):
            if names is not None and cls not in names:
                raise ValueError(f"{mask_file}: class index {cls} has no name in the class names file")
            rle = mask_utils.encode(np.asfortranarray(binary))
            area = float(mask_utils.area(rle))
            if area < min_area:
                continue
            seen.add(cls)
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": image_id, "category_id": cls,
                "bbox": [float(v) for v in mask_utils.toBbox(rle)], "area": area, "iscrowd": 0,
                "segmentation": _segmentation(binary, polygons)})
    inputs.report()
    if not matched:
        example = masks / inputs.files[0].relative_to(images).with_suffix(".png")
        raise _no_labels_matched("mask", masks, images, example, "--masks")
    indices = sorted(names) if names is not None else sorted(seen)
    dataset["categories"] = [{"id": i, "name": names[i] if names else f"class_{i}"}
                             for i in indices if i not in (background, ignore_index)]
    return dataset


def write_and_check(dataset: dict, out: Path) -> COCO:
    """Write ``dataset`` to ``out`` and load it back with pycocotools (masks of every annotation too)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out))
    for ann in coco.dataset["annotations"]:
        if "segmentation" in ann:
            coco.annToMask(ann)
    return coco

"""Bad-input battery for CocoDetection beyond tests/datasets/test_coco_detection.py (which covers NaN /
negative / zero-size boxes, unknown categories, missing image files, malformed json and missing fields):
corrupt / empty / oversized / non-RGB images, empty json, non-UTF-8 names, paths out of the root, and a
whole messy epoch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densevision.datasets.coco_detection import CocoDetection, CocoFormatError, detection_collate

SHAPE = (24, 32)  # (H, W)


def write_dataset(root: Path, names: list[str], boxes: list[list[float]] | None = None,
                  images: dict[str, Image.Image] | None = None) -> Path:
    """One image per name (random RGB unless given), one 'cat' box per image (or ``boxes``)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    images = images or {}
    entries, anns = [], []
    for index, name in enumerate(names, start=1):
        path = root / "img" / name
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
        image = images.get(name, Image.fromarray(np.full((*SHAPE, 3), 30 * index, np.uint8)))
        if not name.startswith(".."):
            image.save(path, format="PNG")
        entries.append({"id": index, "file_name": name, "height": SHAPE[0], "width": SHAPE[1]})
        for box in boxes or [[2, 3, 10, 8]]:
            anns.append({"id": len(anns) + 1, "image_id": index, "category_id": 1, "bbox": box})
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({"images": entries, "annotations": anns,
                                    "categories": [{"id": 1, "name": "cat"}]}))
    return ann_file


def test_corrupt_and_zero_byte_images_are_skipped_and_counted(tmp_path: Path) -> None:
    ann_file = write_dataset(tmp_path, ["a.png", "b.png", "c.png"])
    (tmp_path / "img" / "b.png").write_bytes(b"")
    data = (tmp_path / "img" / "c.png").read_bytes()
    (tmp_path / "img" / "c.png").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning) as record:
        dataset = CocoDetection(tmp_path / "img", ann_file)
    messages = "\n".join(str(r.message) for r in record)
    assert "b.png: cannot be read" in messages and "c.png: cannot be read" in messages
    assert "unreadable_image_files=2" in messages
    assert dataset.report["unreadable_image_files"] == 2 and dataset.ids == [1]
    assert len(dataset.coco.getAnnIds()) == 1  # the skipped images' annotations went with them


def test_file_broken_after_the_check_raises_naming_it(tmp_path: Path) -> None:
    ann_file = write_dataset(tmp_path, ["a.png"])
    dataset = CocoDetection(tmp_path / "img", ann_file)
    (tmp_path / "img" / "a.png").write_bytes(b"")
    with pytest.raises(OSError, match=r"a\.png: cannot be read"):
        dataset[0]


def test_non_rgb_images_are_converted_to_rgb(tmp_path: Path) -> None:
    gray = np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint8).reshape(SHAPE)
    images = {
        "gray.png": Image.fromarray(gray, mode="L"),
        "rgba.png": Image.fromarray(np.dstack([np.full(SHAPE, v, np.uint8) for v in (10, 10, 10, 0)])),
        "palette.png": Image.fromarray(gray, mode="L").convert("P"),
        "wide.png": Image.fromarray(gray.astype(np.uint16) * 257),
    }
    ann_file = write_dataset(tmp_path, list(images), images=images)
    dataset = CocoDetection(tmp_path / "img", ann_file)
    out = {dataset.coco.imgs[dataset.ids[i]]["file_name"]: dataset[i][0] for i in range(len(dataset))}
    expected = torch.from_numpy(gray).float().div(255).expand(3, *SHAPE)
    for name, image in out.items():
        assert image.shape == (3, *SHAPE), name
    torch.testing.assert_close(out["gray.png"], expected)
    torch.testing.assert_close(out["wide.png"], expected)
    torch.testing.assert_close(out["palette.png"], expected, atol=1 / 255, rtol=0)
    torch.testing.assert_close(out["rgba.png"][:, 0, 0], torch.full((3,), 10 / 255))


def test_oversized_image_is_skipped_by_the_decompression_bomb_guard(tmp_path: Path, monkeypatch) -> None:
    ann_file = write_dataset(tmp_path, ["huge.png"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 24x32 > 2 * 100: PIL's error, not its warning
    with pytest.warns(UserWarning, match=r"huge\.png: too large .*MAX_IMAGE_PIXELS"):
        dataset = CocoDetection(tmp_path / "img", ann_file)
    assert dataset.report["unreadable_image_files"] == 1 and len(dataset) == 0


@pytest.mark.parametrize(("text", "message"), [
    ("", r"ann\.json: malformed json"),
    ("{}", r"ann\.json: field 'images' must be a list"),
    ("[]", r"ann\.json: expected a json object"),
])
def test_empty_annotation_json_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "ann.json").write_text(text)
    with pytest.raises(CocoFormatError, match=message):
        CocoDetection(tmp_path, tmp_path / "ann.json")


def test_json_with_no_images_gives_an_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "ann.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert len(CocoDetection(tmp_path, tmp_path / "ann.json")) == 0


def test_annotations_pointing_to_missing_images_are_counted(tmp_path: Path) -> None:
    ann_file = write_dataset(tmp_path, ["a.png"])
    data = json.loads(ann_file.read_text())
    data["annotations"].append({"id": 99, "image_id": 42, "category_id": 1, "bbox": [1, 1, 4, 4]})
    ann_file.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="annotations_of_missing_images=1"):
        dataset = CocoDetection(tmp_path / "img", ann_file)
    assert len(dataset[0][1]["boxes"]) == 1


def test_non_utf8_file_name_is_read(tmp_path: Path) -> None:
    # a Linux file name that is not UTF-8 reaches json as a surrogate escape (os.fsdecode)
    name = os.fsdecode(b"caf\xe9.png")
    ann_file = write_dataset(tmp_path, [name])
    assert (tmp_path / "img" / os.fsdecode(b"caf\xe9.png")).exists()
    image, target = CocoDetection(tmp_path / "img", ann_file)[0]
    assert image.shape == (3, *SHAPE) and len(target["boxes"]) == 1


def test_dotdot_file_name_escaping_the_root_is_refused(tmp_path: Path) -> None:
    ann_file = write_dataset(tmp_path, ["a.png", "../../etc/passwd"])
    message = r"ann\.json: image id 2 file_name '\.\./\.\./etc/passwd'.*outside the dataset root"
    with pytest.raises(CocoFormatError, match=message):
        CocoDetection(tmp_path / "img", ann_file)


def test_symlink_escaping_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(outside)
    ann_file = write_dataset(tmp_path, ["a.png", "link.png"])
    (tmp_path / "img" / "link.png").unlink()
    (tmp_path / "img" / "link.png").symlink_to(outside)
    with pytest.raises(CocoFormatError, match=r"image id 2 file_name 'link\.png'.*outside the dataset root"):
        CocoDetection(tmp_path / "img", ann_file)


def test_messy_dataset_runs_a_whole_epoch(tmp_path: Path) -> None:
    """Bad boxes, bad files and dangling annotations together: skipped, counted once, the epoch runs."""
    ann_file = write_dataset(tmp_path, ["a.png", "b.png", "c.png", "d.png"],
                             boxes=[[2, 3, 10, 8], [1, 1, 0, 5], [1, 1, -3, 5], [float("nan"), 1, 2, 2]])
    (tmp_path / "img" / "b.png").write_bytes(b"garbage")
    (tmp_path / "img" / "c.png").unlink()
    with pytest.warns(UserWarning, match=r"degenerate_boxes_dropped=6.*missing_image_files=1.*"
                                         r"unreadable_image_files=1"):
        dataset = CocoDetection(tmp_path / "img", ann_file)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=detection_collate)
    targets = [t for _, batch in loader for t in batch]
    assert len(targets) == 2 and all(len(t["boxes"]) == 1 for t in targets)

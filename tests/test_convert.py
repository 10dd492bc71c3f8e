"""``densevision convert``: YOLO txt and mask PNGs -> COCO json, round trips through pycocotools."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from densevision.apps.convert import main
from densevision.cli import main as cli_main
from densevision.datasets.converters import read_class_names
from densevision.datasets.image_io import ImageFileError
from tests.bad_files import write_bad_images


def _images(folder, sizes):
    folder.mkdir(parents=True)
    for name, (h, w) in sizes.items():
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / f"{name}.jpg")


def test_yolo_round_trip_with_category_ids_from_a_coco_json(tmp_path):
    _images(tmp_path / "images", {"a": (100, 200), "b": (50, 50)})
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.2\n0 0.1 0.2 0.1 0.2\n\n")
    (tmp_path / "names.yaml").write_text("names:\n  0: person\n  1: car\n")
    reference = {"categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}]}
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    out = tmp_path / "out" / "coco.json"
    assert cli_main(["convert", "yolo2coco", "--images", str(tmp_path / "images"), "--labels",
                     str(tmp_path / "labels"), "--names", str(tmp_path / "names.yaml"),
                     "--categories-from", str(tmp_path / "ref.json"), "--out", str(out)]) == 0
    coco = COCO(str(out))
    image = next(i for i in coco.dataset["images"] if i["file_name"] == "a.jpg")
    assert (image["width"], image["height"]) == (200, 100)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
    assert [(a["category_id"], a["bbox"]) for a in anns] == [(3, [50, 40, 100, 20]), (1, [10, 10, 20, 20])]
    assert coco.getAnnIds(imgIds=[i["id"] for i in coco.dataset["images"] if i["file_name"] == "b.jpg"]) == []


def test_yolo_default_ids_and_bad_lines(tmp_path):
    _images(tmp_path / "images", {"a": (10, 10)})
    (tmp_path / "labels").mkdir()
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    label = tmp_path / "labels" / "a.txt"
    args = ["yolo2coco", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--names", str(tmp_path / "names.txt"), "--out", str(tmp_path / "o.json")]
    label.write_text("1 0.5 0.5 1 1\n")
    assert main(args) == 0
    coco = COCO(str(tmp_path / "o.json"))
    assert sorted(coco.cats) == [1, 2] and coco.anns[1]["category_id"] == 2
    label.write_text("0 0.5 0.5 1\n")
    with pytest.raises(ValueError, match=r"a.txt:1: expected 'class cx cy w h', got '0 0.5 0.5 1'"):
        main(args)
    label.write_text("0 0.5 0.5 1 1\n5 0.5 0.5 1 1\n")
    with pytest.raises(ValueError, match=r"a.txt:2: class index 5 outside the 2 class names"):
        main(args)
    label.write_text("x 0.5 0.5 1 1\n")
    with pytest.raises(ValueError, match="a.txt:1: non-numeric value"):
        main(args)


def _class_mask():
    mask = np.zeros((40, 60), np.uint8)
    mask[2:10, 3:13] = 1  # two separate regions of class 1
    mask[20:30, 40:55] = 1
    mask[15:25, 10:20] = 2
    mask[35:40, 0:60] = 255  # ignored
    return mask


@pytest.mark.parametrize("polygons", [False, True])
def test_class_masks_round_trip(tmp_path, polygons):
    _images(tmp_path / "images", {"a": (40, 60), "b": (40, 60)})
    (tmp_path / "masks").mkdir()
    mask = _class_mask()
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    (tmp_path / "names.yaml").write_text("classes:\n  0: background\n  1: road\n  2: car\n")
    out = tmp_path / "m.json"
    args = ["masks2coco", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
            "--names", str(tmp_path / "names.yaml"), "--out", str(out)]
    assert main(args + (["--polygons"] if polygons else [])) == 0
    coco = COCO(str(out))
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == [(1, "road"), (2, "car")]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert sorted(a["category_id"] for a in anns) == [1, 1, 2]
    rebuilt = np.zeros_like(mask)
    for ann in anns:
        rebuilt[coco.annToMask(ann) > 0] = ann["category_id"]
    expected = np.where(mask == 255, 0, mask)
    # polygons trace pixel centres, so they lose about half a pixel along region borders
    mismatch = (rebuilt != expected).sum()
    assert mismatch == 0 if not polygons else mismatch < 0.3 * (expected > 0).sum()
    assert coco.getAnnIds(imgIds=[2]) == []  # no mask file: an image without objects


def test_instance_masks_take_the_majority_class(tmp_path):
    _images(tmp_path / "images", {"a": (40, 60)})
    for folder in ("masks", "inst"):
        (tmp_path / folder).mkdir()
    classes = _class_mask()
    instances = np.zeros_like(classes)
    instances[2:10, 3:13] = 1
    instances[20:30, 40:55] = 1  # one instance in two pieces
    instances[15:25, 10:20] = 2
    Image.fromarray(classes).save(tmp_path / "masks" / "a.png")
    Image.fromarray(instances).save(tmp_path / "inst" / "a.png")
    out = tmp_path / "i.json"
    assert main(["masks2coco", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                 "--instance-masks", str(tmp_path / "inst"), "--out", str(out)]) == 0
    coco = COCO(str(out))
    anns = sorted(coco.loadAnns(coco.getAnnIds()), key=lambda a: a["category_id"])
    assert [(a["category_id"], a["area"]) for a in anns] == [(1, 80 + 150), (2, 100)]
    assert [c["name"] for c in coco.dataset["categories"]] == ["class_1", "class_2"]


def test_mask_size_mismatch_and_unnamed_class(tmp_path):
    _images(tmp_path / "images", {"a": (40, 60)})
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.ones((20, 20), np.uint8)).save(tmp_path / "masks" / "a.png")
    args = ["masks2coco", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
            "--out", str(tmp_path / "x.json")]
    with pytest.raises(ValueError, match=r"a.png: mask of shape \(20, 20\) does not match image"):
        main(args)
    Image.fromarray(np.full((40, 60), 3, np.uint8)).save(tmp_path / "masks" / "a.png")
    (tmp_path / "names.txt").write_text("bg\nroad\n")
    with pytest.raises(ValueError, match="class index 3 has no name"):
        main([*args, "--names", str(tmp_path / "names.txt")])


def test_class_names_files(tmp_path):
    (tmp_path / "list.yaml").write_text("names: [a, b]\n")
    assert read_class_names(tmp_path / "list.yaml") == {0: "a", 1: "b"}
    (tmp_path / "bad.yaml").write_text("other: 1\n")
    with pytest.raises(ValueError, match="bad.yaml: expected a 'names' or 'classes'"):
        read_class_names(tmp_path / "bad.yaml")


def test_coco128_yolo_labels_convert_to_coco_ids(shared_data, tmp_path):
    root = shared_data / "coco128"
    out = tmp_path / "train.json"
    assert main(["yolo2coco", "--images", str(root / "images/train2017"), "--labels",
                 str(root / "object_detection/labels/train2017"), "--names",
                 str(root / "object_detection/config.yaml"), "--categories-from",
                 str(root / "annotations/instances_train2017.json"), "--out", str(out)]) == 0
    converted = COCO(str(out))
    original = COCO(str(root / "annotations/instances_train2017.json"))
    assert converted.cats == {k: {"id": v["id"], "name": v["name"]} for k, v in original.cats.items()}
    # same non-crowd boxes (YOLO labels are rounded to 6 decimals of the image size)
    by_name = {i["file_name"]: i["id"] for i in converted.dataset["images"]}
    image = original.dataset["images"][0]
    ours = sorted(tuple(a["bbox"]) for a in converted.imgToAnns[by_name[image["file_name"]]])
    theirs = sorted(tuple(a["bbox"]) for a in original.imgToAnns[image["id"]] if not a["iscrowd"])
    assert np.allclose(ours, theirs, atol=0.5)


def _yolo_args(tmp_path, labels="labels"):
    return ["yolo2coco", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / labels),
            "--names", str(tmp_path / "names.txt"), "--out", str(tmp_path / "out" / "o.json")]


def test_a_labels_folder_that_matches_nothing_is_an_error(tmp_path, capsys):
    _images(tmp_path / "images", {"a": (10, 10), "b": (10, 10)})
    (tmp_path / "names.txt").write_text("cat\n")
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "other.txt").write_text("0 0.5 0.5 1 1\n")
    with pytest.raises(ValueError, match=r"no label file in .*wrong matches an image under .*images .*"
                                         r"wrong/a.txt\); check --labels"):
        main(_yolo_args(tmp_path, "wrong"))
    assert cli_main(["convert", *_yolo_args(tmp_path, "wrong")]) == 1
    err = capsys.readouterr().err
    assert "check --labels" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "o.json").exists()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match=r"no mask file in .*masks .*masks/a.png\); check --masks"):
        main(["masks2coco", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
              "--out", str(tmp_path / "m.json")])


def test_unreadable_images_are_skipped_and_listed(tmp_path, caplog, capsys):
    _images(tmp_path / "images", {"a": (10, 20)})
    bad = write_bad_images(tmp_path / "images" / "bad")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "names.txt").write_text("cat\n")
    with caplog.at_level(logging.INFO, logger="densevision"):
        assert cli_main(["convert", *_yolo_args(tmp_path)]) == 0
    coco = COCO(str(tmp_path / "out" / "o.json"))
    assert [i["file_name"] for i in coco.dataset["images"]] == ["a.jpg"] and len(coco.anns) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 4 of 5 unreadable image(s)" in warnings[0]
    assert all(path.name in warnings[0] for path in bad)
    # PIL's errors (here its decompression-bomb guard) come wrapped, naming the file
    with pytest.raises(ImageFileError, match="bad/bomb.png: too large"):
        main([*_yolo_args(tmp_path), "--strict"])
    capsys.readouterr()
    assert cli_main(["convert", *_yolo_args(tmp_path), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "bomb.png: too large" in err and "Traceback" not in err


def test_an_unreadable_mask_is_skipped_and_named(tmp_path, caplog):
    _images(tmp_path / "images", {"a": (40, 60), "b": (40, 60)})
    (tmp_path / "masks").mkdir()
    Image.fromarray(_class_mask()).save(tmp_path / "masks" / "a.png")
    (tmp_path / "masks" / "b.png").write_bytes(b"")
    out = tmp_path / "m.json"
    args = ["masks2coco", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
            "--out", str(out)]
    with caplog.at_level(logging.WARNING, logger="densevision"):
        assert main(args) == 0
    assert "masks/b.png: cannot be read" in caplog.text
    assert [i["file_name"] for i in COCO(str(out)).dataset["images"]] == ["a.jpg"]
    with pytest.raises(ImageFileError, match="masks/b.png: cannot be read"):
        main([*args, "--strict"])


def test_the_output_folder_is_checked_first(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = ["convert", "yolo2coco", "--images", str(tmp_path / "none"), "--labels", str(tmp_path / "none"),
            "--names", str(tmp_path / "none.txt"), "--out", str(blocker / "o.json")]
    assert cli_main(args) == 1
    assert f"output folder {blocker} is not writable" in capsys.readouterr().err

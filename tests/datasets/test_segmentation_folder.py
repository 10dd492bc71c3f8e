"""SegmentationFolder: reading, palette masks, every bad-input case, skip_bad, class weights, CamVid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densevision.datasets import CamVidDataModule, SegmentationDataError, SegmentationFolder
from densevision.datasets.segmentation import CAMVID_CLASSES, median_frequency_weights


def write_sample(root: Path, stem: str, mask: np.ndarray, *, split: str = "train", mode: str = "L") -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / split / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8), mode="L").convert(mode).save(
        root / f"{split}annot" / f"{stem}.png"
    )


def masks(count: int, shape=(10, 12), num_classes: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, num_classes, shape).astype(np.uint8) for _ in range(count)]


def test_reads_images_and_masks(tmp_path: Path) -> None:
    written = masks(3)
    for i, mask in enumerate(written):
        write_sample(tmp_path, f"s{i}", mask)
    dataset = SegmentationFolder(tmp_path, "train", num_classes=3)
    assert len(dataset) == 3
    item = dataset[1]
    assert item["image"].shape == (3, 10, 12) and item["image"].dtype.is_floating_point
    assert item["mask"].dtype.is_floating_point is False
    np.testing.assert_array_equal(item["mask"].numpy(), written[1])
    assert item["path"].endswith("s1.png")
    expected = np.bincount(np.concatenate([m.ravel() for m in written]), minlength=3)
    np.testing.assert_array_equal(dataset.class_pixels, expected)


def test_palette_mask_values_are_palette_indices(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2, 255]] * 4, dtype=np.uint8)
    write_sample(tmp_path, "p", mask)
    path = tmp_path / "trainannot" / "p.png"
    palette_png = Image.fromarray(mask, mode="L").convert("P")
    palette_png.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [255, 255, 255] * 253)
    palette_png.save(path)
    assert Image.open(path).mode == "P"
    dataset = SegmentationFolder(tmp_path, "train", num_classes=3, ignore_index=255)
    np.testing.assert_array_equal(dataset[0]["mask"].numpy(), mask)


def test_missing_mask(tmp_path: Path) -> None:
    write_sample(tmp_path, "a", masks(1)[0])
    (tmp_path / "trainannot" / "a.png").unlink()
    with pytest.raises(SegmentationDataError, match=r"image .*a\.png: mask .*trainannot/a\.png is missing"):
        SegmentationFolder(tmp_path, "train", num_classes=3)


def test_size_mismatch(tmp_path: Path) -> None:
    write_sample(tmp_path, "a", masks(1)[0])
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "trainannot" / "a.png")
    with pytest.raises(
        SegmentationDataError, match=r"a\.png: size 5x5 \(WxH\) does not match image .* 12x10"
    ):
        SegmentationFolder(tmp_path, "train", num_classes=3)


def test_mask_value_out_of_range(tmp_path: Path) -> None:
    mask = masks(1)[0]
    mask[0, 0], mask[1, 1] = 7, 255
    write_sample(tmp_path, "a", mask)
    with pytest.raises(SegmentationDataError, match=r"a\.png: values \[7\] are not class indices 0\.\.2"):
        SegmentationFolder(tmp_path, "train", num_classes=3, ignore_index=255)
    mask[0, 0] = 2
    write_sample(tmp_path, "a", mask)
    assert len(SegmentationFolder(tmp_path, "train", num_classes=3, ignore_index=255)) == 1


def test_unreadable_image(tmp_path: Path) -> None:
    write_sample(tmp_path, "a", masks(1)[0])
    (tmp_path / "train" / "a.png").write_bytes(b"not a png at all")
    with pytest.raises(SegmentationDataError, match=r"image .*train/a\.png: cannot be read"):
        SegmentationFolder(tmp_path, "train", num_classes=3)


def test_colour_mask_is_rejected(tmp_path: Path) -> None:
    write_sample(tmp_path, "a", masks(1)[0], mode="RGB")
    with pytest.raises(SegmentationDataError, match=r"a\.png: mode 'RGB' is not a class-index mask"):
        SegmentationFolder(tmp_path, "train", num_classes=3)


def test_skip_bad_counts_and_warns(tmp_path: Path) -> None:
    for i, mask in enumerate(masks(4)):
        write_sample(tmp_path, f"s{i}", mask)
    (tmp_path / "trainannot" / "s0.png").unlink()
    (tmp_path / "train" / "s2.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 bad samples") as record:
        dataset = SegmentationFolder(tmp_path, "train", num_classes=3, skip_bad=True)
    message = str(record[0].message)
    assert "s0.png is missing" in message and "s2.png: cannot be read" in message
    assert [Path(s.image).name for s in dataset.samples] == ["s1.png", "s3.png"]
    assert len(dataset.skipped) == 2


def test_missing_folder_and_empty_split(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"image folder .*nowhere does not exist"):
        SegmentationFolder(tmp_path, "nowhere", num_classes=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images"):
        SegmentationFolder(tmp_path, "empty", num_classes=3)


def test_median_frequency_weights_by_hand(tmp_path: Path) -> None:
    # image a: 6 px of class 0, 2 px of class 1; image b: 4 px of class 0, 4 px of class 2.
    write_sample(tmp_path, "a", np.array([[0, 0, 0, 0], [0, 0, 1, 1]]))
    write_sample(tmp_path, "b", np.array([[0, 0, 2, 2], [0, 0, 2, 2]]))
    dataset = SegmentationFolder(tmp_path, "train", num_classes=4)
    # freq: class 0 = 10/16, class 1 = 2/8, class 2 = 4/8, class 3 absent; median(0.625, 0.25, 0.5) = 0.5
    np.testing.assert_allclose(dataset.median_frequency_weights(), [0.8, 2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="at least one labelled pixel"):
        median_frequency_weights(np.zeros(3), np.zeros(3))


def test_camvid_val_split(shared_data: Path) -> None:
    data = CamVidDataModule(root=str(shared_data / "camvid"), resize=(90, 120), batch_size=2)
    val = data.dataset("val")
    assert len(val) == 101 and val.class_names == CAMVID_CLASSES and val.ignore_index == 11
    item = val[0]
    # evaluation resizes the image only: masks stay at the labels' resolution, where scores are taken
    assert item["image"].shape == (3, 90, 120) and item["mask"].shape == (360, 480)
    assert set(item["mask"].unique().tolist()) <= set(range(12))
    # Every class appears in CamVid val, and void pixels are not counted.
    assert (val.class_pixels > 0).all() and val.class_pixels.sum() < 101 * 480 * 360


def _stems(module: CamVidDataModule, stage: str) -> list[str]:
    return sorted(s.image.stem for s in module.dataset(stage).samples)


@pytest.mark.parametrize("holdout_split", ["val", "test"])
def test_holdout_sequence_is_never_trained_on(tmp_path: Path, holdout_split: str) -> None:
    (mask,) = masks(1, num_classes=11)
    frames = {"train": ["0001TP_1", "0006R0_1", "0016E5_1"], "val": ["0016E5_9", "0006R0_9"]}
    for split, stems in frames.items():
        for stem in stems:
            write_sample(tmp_path, stem, mask, split=split)
    module = CamVidDataModule(str(tmp_path), holdout_sequence="0006R0", holdout_split=holdout_split)
    if holdout_split == "val":  # train + val without 0006R0; validation is 0006R0 alone
        assert _stems(module, "train") == ["0001TP_1", "0016E5_1", "0016E5_9"]
        assert _stems(module, "val") == ["0006R0_1", "0006R0_9"]
    else:  # train and val keep their frames without 0006R0; test is 0006R0 alone
        assert _stems(module, "train") == ["0001TP_1", "0016E5_1"]
        assert _stems(module, "val") == ["0016E5_9"]
        assert _stems(module, "test") == ["0006R0_1", "0006R0_9"]


def test_holdout_split_and_unknown_sequence_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holdout_split='train': expected 'val' or 'test'"):
        CamVidDataModule(str(tmp_path), holdout_sequence="0006R0", holdout_split="train")
    for split in ("train", "val"):
        write_sample(tmp_path, f"0016E5_{split}", masks(1)[0], split=split)
    module = CamVidDataModule(str(tmp_path), holdout_sequence="0006R0", holdout_split="test")
    with pytest.raises(SegmentationDataError, match="no image is kept by holdout_sequence='0006R0'"):
        module.dataset("test")

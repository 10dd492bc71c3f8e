"""Bad-input battery for SegmentationFolder beyond tests/datasets/test_segmentation_folder.py (which covers
missing masks, size mismatch, out-of-range labels, colour masks, skip_bad): corrupt / empty / oversized /
non-RGB images, non-UTF-8 names, symlinks out of the root, and a whole messy epoch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densevision.datasets import SegmentationDataError, SegmentationFolder
from densevision.datasets.image_io import read_rgb_image

SHAPE = (16, 20)  # (H, W)


def write_pair(root: Path, stem: str, image: Image.Image | None = None, split: str = "train") -> Path:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    if image is None:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*SHAPE, 3), dtype=np.uint8))
    path = root / split / f"{stem}.png"
    image.save(path)
    Image.fromarray(np.ones(SHAPE, np.uint8)).save(root / f"{split}annot" / f"{stem}.png")
    return path


def test_zero_byte_image_names_the_file(tmp_path: Path) -> None:
    write_pair(tmp_path, "good")
    write_pair(tmp_path, "empty").write_bytes(b"")
    with pytest.raises(SegmentationDataError, match=r"empty\.png: cannot be read"):
        SegmentationFolder(tmp_path, "train", num_classes=3)


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    write_pair(tmp_path, "good")
    path = write_pair(tmp_path, "cut")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(SegmentationDataError, match=r"cut\.png: cannot be read"):
        SegmentationFolder(tmp_path, "train", num_classes=3)


def test_zero_byte_mask_names_the_mask(tmp_path: Path) -> None:
    write_pair(tmp_path, "a")
    (tmp_path / "trainannot" / "a.png").write_bytes(b"")
    with pytest.raises(SegmentationDataError, match=r"trainannot/a\.png: cannot be read"):
        SegmentationFolder(tmp_path, "train", num_classes=3)


def test_non_rgb_images_are_converted_to_rgb(tmp_path: Path) -> None:
    gray = np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint8).reshape(SHAPE)
    rgba = np.dstack([np.full(SHAPE, v, np.uint8) for v in (10, 20, 30, 0)])
    write_pair(tmp_path, "gray", Image.fromarray(gray, mode="L"))
    write_pair(tmp_path, "rgba", Image.fromarray(rgba, mode="RGBA"))
    write_pair(tmp_path, "palette", Image.fromarray(gray, mode="L").convert("P"))
    write_pair(tmp_path, "wide", Image.fromarray(gray.astype(np.uint16) * 257))  # 16-bit, full range
    dataset = SegmentationFolder(tmp_path, "train", num_classes=3)
    items = {Path(item["path"]).stem: item["image"] for item in dataset}
    for stem, image in items.items():
        assert image.shape == (3, *SHAPE), stem
    expected_gray = torch.from_numpy(gray).float().div(255).expand(3, *SHAPE)
    torch.testing.assert_close(items["gray"], expected_gray)
    torch.testing.assert_close(items["wide"], expected_gray)  # scaled by 1/257, not clipped at 255
    torch.testing.assert_close(items["rgba"][:, 0, 0], torch.tensor([10, 20, 30]) / 255)  # alpha dropped
    assert items["palette"].std() > 0


def test_sixteen_bit_image_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)).save(path)
    np.testing.assert_array_equal(read_rgb_image(path)[0, :, 0], [0, 128, 255])


def test_oversized_image_is_refused_by_the_decompression_bomb_guard(tmp_path: Path, monkeypatch) -> None:
    write_pair(tmp_path, "huge")
    # PIL raises above twice MAX_IMAGE_PIXELS; 16x20 = 320 pixels > 2 * 100
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(SegmentationDataError, match=r"huge\.png: too large .*MAX_IMAGE_PIXELS"):
        SegmentationFolder(tmp_path, "train", num_classes=3)


def test_non_utf8_file_names_are_read(tmp_path: Path) -> None:
    write_pair(tmp_path, "ok")
    name = os.fsdecode(b"caf\xe9")  # not UTF-8: a surrogate-escaped str on Linux
    write_pair(tmp_path, name)
    dataset = SegmentationFolder(tmp_path, "train", num_classes=3)
    assert len(dataset) == 2
    paths = [os.fsencode(item["path"]) for item in dataset]
    assert any(p.endswith(b"caf\xe9.png") for p in paths)


def test_symlink_out_of_the_root_is_refused_or_skipped(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    write_pair(root, "good")
    write_pair(outside, "secret")
    (root / "train" / "secret.png").symlink_to(outside / "train" / "secret.png")
    (root / "trainannot" / "secret.png").symlink_to(outside / "trainannot" / "secret.png")
    with pytest.raises(OSError, match=r"secret\.png: resolves to .*outside the dataset root"):
        SegmentationFolder(root, "train", num_classes=3)
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 bad samples"):
        dataset = SegmentationFolder(root, "train", num_classes=3, skip_bad=True)
    assert [Path(s.image).stem for s in dataset.samples] == ["good"]


def test_messy_folder_trains_a_whole_epoch_with_skip_bad(tmp_path: Path) -> None:
    """Every kind of bad sample together: skipped, counted and reported once; the epoch runs through."""
    for i in range(3):
        write_pair(tmp_path, f"good{i}")
    write_pair(tmp_path, "empty").write_bytes(b"")
    write_pair(tmp_path, "garbage").write_bytes(b"not a png at all")
    write_pair(tmp_path, "nomask")
    (tmp_path / "trainannot" / "nomask.png").unlink()
    write_pair(tmp_path, "badlabel")
    Image.fromarray(np.full(SHAPE, 7, np.uint8)).save(tmp_path / "trainannot" / "badlabel.png")
    write_pair(tmp_path, "badsize")
    Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / "trainannot" / "badsize.png")
    with pytest.warns(UserWarning, match=r"skipped 5 of 8 bad samples") as record:
        dataset = SegmentationFolder(tmp_path, "train", num_classes=3, skip_bad=True)
    message = str(record[0].message)
    for stem in ("empty", "garbage", "nomask", "badlabel", "badsize"):
        assert f"{stem}.png" in message
    assert len(dataset.skipped) == 5
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=2))
    assert sum(len(b["image"]) for b in batches) == 3


def _mixed_sizes(root: Path) -> None:
    """A val split of two images of different sizes (valid data: evaluation keeps each image's size)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for stem, (h, w) in (("small", (24, 36)), ("large", (32, 40))):
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            image.save(root / split / f"{stem}.png")
            mask = Image.fromarray(rng.integers(0, 3, (h, w), dtype=np.uint8))
            mask.save(root / f"{split}annot" / f"{stem}.png")


def test_validation_with_images_of_different_sizes_pads_or_names_the_files(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer

    from densevision.datasets.segmentation_datamodule import SegmentationDataModule
    from densevision.models.segmentation.tiramisu import FCDenseNet
    from densevision.tasks.segmentation import SegmentationTask

    _mixed_sizes(tmp_path)
    model = FCDenseNet(num_classes=3, growth_rate=4, down_blocks=(1, 1), bottleneck_layers=1, stem_channels=8)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path / "run")
    data = SegmentationDataModule(str(tmp_path), num_classes=3, ignore_index=255, batch_size=2,
                                  augment="none")
    batch = next(iter(data.val_dataloader()))
    # padded to the larger image; the padding is ignored (255) and each sample's size is kept
    assert batch["image"].shape == (2, 3, 32, 40) and batch["size"].tolist() == [[32, 40], [24, 36]]
    assert (batch["mask"][1, 24:] == 255).all() and (batch["mask"][1, :, 36:] == 255).all()
    task = SegmentationTask(model, num_classes=3, ignore_index=255)
    (metrics,) = trainer.validate(task, datamodule=data, verbose=False)
    assert 0 <= metrics["val/mIoU"] <= 1

    no_ignore = SegmentationDataModule(str(tmp_path), num_classes=3, batch_size=2, augment="none")
    with pytest.raises(SegmentationDataError, match=r"different sizes: .*large\.png \(40x32\), .*small\.png "
                                                    r"\(36x24\).*resize"):
        next(iter(no_ignore.val_dataloader()))

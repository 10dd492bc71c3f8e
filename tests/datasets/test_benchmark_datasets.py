"""Cityscapes, VOC and ADE20K data modules on miniature replicas of their published trees: the label mapping
pixel by pixel, the task's metrics ignoring what each benchmark ignores, and bad input in the real layouts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image
from torch import nn

from densevision.datasets import (
    ADE20KDataModule,
    CamVidDataModule,
    CityscapesDataModule,
    SegmentationDataError,
    VOCSegmentationDataModule,
)
from densevision.tasks.segmentation import SegmentationTask
from tests.datasets.replicas import VOC_IDS, ade20k_replica, cityscapes_replica, every_id, voc_replica

# cityscapesScripts helpers/labels.py, the trainId column, typed out again here as the reference
CITYSCAPES_TRAIN_ID = {
    **dict.fromkeys(range(7), 255), 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4, 14: 255, 15: 255,
    16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15,
    29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


@pytest.fixture
def cityscapes(tmp_path):
    return cityscapes_replica(tmp_path / "cityscapes")


@pytest.fixture
def voc(tmp_path):
    return voc_replica(tmp_path / "VOCdevkit" / "VOC2012")


@pytest.fixture
def ade(tmp_path):
    return ade20k_replica(tmp_path / "ADEChallengeData2016")


def plain(module_class, root, **kwargs):
    """A data module whose training items are the files as read (no crop, flip or resize)."""
    return module_class(str(root), augment="none", crop_size=None, batch_size=2, num_workers=0, **kwargs)


def test_cityscapes_label_ids_become_train_ids_pixel_by_pixel(cityscapes):
    data = plain(CityscapesDataModule, cityscapes)
    train = data.dataset("train")
    assert [s.image.name for s in train.samples][0] == "aachen_000000_000019_leftImg8bit.png"
    item = next(train[i] for i, s in enumerate(train.samples) if "aachen_000000_000019" in s.image.name)
    stored = every_id(64, 128, 34)
    expected = np.vectorize(CITYSCAPES_TRAIN_ID.__getitem__)(stored)
    assert torch.equal(item["mask"], torch.from_numpy(expected).long())
    assert item["mask"][stored == 7].unique().tolist() == [0]  # road
    assert item["mask"][stored < 7].unique().tolist() == [255]
    assert item["mask"][stored == 26].unique().tolist() == [13]  # car
    assert data.num_classes == 19 and data.ignore_index == 255
    assert data.class_names[:3] == ["road", "sidewalk", "building"] and data.class_names[-1] == "bicycle"
    assert data.palette[0] == (128, 64, 128) and data.palette[13] == (0, 0, 142)
    assert len(data.dataset("val")) == 2 and len(data.dataset("test")) == 2  # test reads val


def test_voc_keeps_indices_and_ignores_boundaries(voc):
    data = plain(VOCSegmentationDataModule, voc)
    item = data.dataset("val")[0]
    stored = np.asarray(Image.open(voc / "SegmentationClass" / "2007_000033.png"))
    assert Image.open(voc / "SegmentationClass" / "2007_000033.png").mode == "P"
    assert torch.equal(item["mask"], torch.tensor(stored, dtype=torch.int64))
    assert (item["mask"] == 255).sum() == stored.shape[0]  # the boundary column stays ignored
    assert data.num_classes == 21 and data.class_names[15] == "person" and data.palette[15] == (192, 128, 128)


def test_voc_sbd_aug_masks_train_and_voc_masks_validate(voc):
    data = plain(VOCSegmentationDataModule, voc, aug_masks="SegmentationClassAug", train_split="train_aug")
    train = data.dataset("train")
    assert [s.mask.parent.name for s in train.samples] == ["SegmentationClassAug"] * 3
    assert [s.mask.parent.name for s in data.dataset("val").samples] == ["SegmentationClass"] * 2


def test_voc_training_list_sharing_validation_images_is_refused(voc):
    data = plain(VOCSegmentationDataModule, voc, train_split="trainval")
    with pytest.raises(SegmentationDataError, match=r"trainval.txt shares 2 images with .*val.txt"):
        data.dataset("train")


def test_ade20k_other_is_ignored_and_classes_shift_down(ade):
    data = plain(ADE20KDataModule, ade)
    item = data.dataset("train")[0]
    stored = every_id(30, 40, 151)
    expected = np.where(stored == 0, 255, stored.astype(np.int64) - 1)
    assert torch.equal(item["mask"], torch.from_numpy(expected))
    assert item["mask"][stored == 1].unique().tolist() == [0]  # wall
    assert item["mask"][stored == 150].unique().tolist() == [149]  # flag
    assert data.num_classes == 150 and data.class_names[0] == "wall" and data.class_names[149] == "flag"
    assert data.palette[0] == (120, 120, 120) and len(data.palette) == 150


def test_every_data_module_exposes_palette_mean_and_std(tmp_path):
    camvid = CamVidDataModule(str(tmp_path))
    assert camvid.palette[:4] == [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128)]
    assert camvid.palette[10] == (0, 128, 192) and len(camvid.palette) == 11
    for module in (camvid, CityscapesDataModule(str(tmp_path)), ADE20KDataModule(str(tmp_path))):
        assert module.mean == pytest.approx((0.485, 0.456, 0.406))
        assert module.std == pytest.approx((0.229, 0.224, 0.225))


class ConstantClass(nn.Module):
    """Predicts class ``index`` everywhere: (N, 3, H, W) -> (N, C, H, W)."""

    def __init__(self, num_classes: int, index: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)
        nn.init.zeros_(self.conv.weight)
        with torch.no_grad():
            self.conv.bias.zero_()
            self.conv.bias[index] = 1.0

    def forward(self, x):
        return self.conv(x)


def validate(data, root_dir) -> dict:
    task = SegmentationTask(ConstantClass(data.num_classes, 0), num_classes=data.num_classes,
                            ignore_index=data.ignore_index, class_names=data.class_names)  # fmt: skip
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=root_dir)  # fmt: skip
    return trainer.validate(task, datamodule=data, verbose=False)[0]


def test_metrics_ignore_what_each_benchmark_ignores(cityscapes, voc, ade, tmp_path):
    # val labels: class 0 on one side, ignored ids on the other: a constant class-0 prediction is perfect
    # only if the ignored pixels count nowhere (Cityscapes ids 0..6, ADE20K's "other")
    for data in (plain(CityscapesDataModule, cityscapes), plain(ADE20KDataModule, ade)):
        metrics = validate(data, tmp_path)
        assert metrics["val/pixel_accuracy"] == pytest.approx(1.0)
        assert metrics["val/mIoU"] == pytest.approx(1.0)
    masks = [np.asarray(Image.open(voc / f"SegmentationClass/{n}.png")) for n in VOC_IDS["val"]]
    background = sum(int((m == 0).sum()) for m in masks)
    counted = sum(int((m != 255).sum()) for m in masks)  # VOC's boundary band scores nowhere
    metrics = validate(plain(VOCSegmentationDataModule, voc), tmp_path)  # two image sizes in one padded batch
    assert metrics["val/pixel_accuracy"] == pytest.approx(background / counted)


def test_cityscapes_colour_label_is_named_with_the_fix(cityscapes):
    label = cityscapes / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(label)
    with pytest.raises(SegmentationDataError, match=r"frankfurt_000000_000294_gtFine_labelIds.png: mode 'RGB'"
                       r".*read the \*_gtFine_labelIds.png files"):  # fmt: skip
        plain(CityscapesDataModule, cityscapes).dataset("val")


def test_cityscapes_train_ids_in_place_of_label_ids_are_refused(cityscapes):
    label = cityscapes / "gtFine/val/frankfurt/frankfurt_000000_000576_gtFine_labelIds.png"
    Image.fromarray(np.full((64, 128), 255, np.uint8)).save(label)
    with pytest.raises(SegmentationDataError, match=r"000576_gtFine_labelIds.png: values \[255\] are not "
                       r"Cityscapes gtFine labelIds ids \(0..33\)"):  # fmt: skip
        plain(CityscapesDataModule, cityscapes).dataset("val")


def test_cityscapes_city_without_labels_is_named_or_counted(cityscapes):
    shutil.rmtree(cityscapes / "gtFine/train/bochum")
    with pytest.raises(SegmentationDataError, match=r"city folder .*leftImg8bit/train/bochum holds 1 images "
                       r"but .*gtFine/train/bochum holds no \*_gtFine_labelIds.png files"):  # fmt: skip
        plain(CityscapesDataModule, cityscapes).dataset("train")
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 bad samples"):
        train = plain(CityscapesDataModule, cityscapes, skip_bad=True).dataset("train")
    assert len(train) == 2 and "bochum" in str(train.skipped[0][0].image)


def test_voc_split_file_naming_a_missing_image_is_named_or_counted(voc):
    with (voc / "ImageSets/Segmentation/val.txt").open("a") as split:
        split.write("2007_999999\n")
    missing = r"val.txt line 3 names image .*2007_999999.jpg, which does not exist"
    with pytest.raises(SegmentationDataError, match=missing):
        plain(VOCSegmentationDataModule, voc).dataset("val")
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 bad samples"):
        assert len(plain(VOCSegmentationDataModule, voc, skip_bad=True).dataset("val")) == 2


def test_ade20k_ids_above_150_are_named(ade):
    mask = np.full((30, 40), 151, np.uint8)
    mask[0, 0] = 200
    Image.fromarray(mask).save(ade / "annotations/validation/ADE_val_00000001.png")
    message = (r"ADE_val_00000001.png: values \[151, 200\] are not ADE20K SceneParsing annotation ids "
               r"\(0..150\); use ADEChallengeData2016/annotations")
    with pytest.raises(SegmentationDataError, match=message):
        plain(ADE20KDataModule, ade).dataset("val")


def test_missing_layouts_say_what_to_unpack(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/train does not exist; unpack leftImg8bit"):
        plain(CityscapesDataModule, tmp_path).dataset("train")
    (tmp_path / "ImageSets/Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("x\n")
    with pytest.raises(FileNotFoundError, match=r"train.txt does not exist; .*Segmentation holds \['val'\]"):
        plain(VOCSegmentationDataModule, tmp_path).dataset("train")

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import densevision
from densevision.cli import main
from densevision.extract import build_backbone


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in [("a.png", (40, 30)), ("b.jpg", (20, 36)), ("sub/c.png", (32, 32))]:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_extract_writes_features_matching_feature_info(image_dir, tmp_path, capsys):
    out, weights = tmp_path / "features.npz", tmp_path / "w.pth"
    torch.save(densevision.create_model("densenet40_k12").state_dict(), weights)
    common = ["extract", "--model", "densenet40_k12", "--weights", str(weights), "--image-size", "32", "24"]
    code = main([*common, "--input", str(image_dir), "--output", str(out), "--features", "c0,c2",
                 "--batch-size", "2"])
    assert code == 0 and "3 images" in capsys.readouterr().out
    data = np.load(out)
    backbone = build_backbone("densenet40_k12", ["c0", "c2"])
    assert list(data["feature_names"]) == [s.name for s in backbone.feature_info] == ["c0", "c2"]
    assert list(data["feature_strides"]) == [1, 4]
    assert list(data["image_files"]) == ["a.png", "b.jpg", "sub/c.png"]
    for spec, channels in zip(backbone.feature_info, data["feature_channels"], strict=True):
        assert data[spec.name].shape == (3, channels, 32 // spec.stride, 24 // spec.stride)
        assert spec.channels == channels
    # the rows are the backbone's output for each image, independent of batching
    single = tmp_path / "one.npz"
    main([*common, "--input", str(image_dir / "sub" / "c.png"), "--output", str(single), "--features", "c2",
          "--pooled"])
    one = np.load(single)
    assert one["c2"].shape == (1, backbone.feature_info[1].channels)
    np.testing.assert_allclose(one["c2"][0], data["c2"][2].mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    assert list(one["image_files"]) == ["c.png"]


def test_extract_rejects_bad_requests(image_dir, tmp_path):
    with pytest.raises(ValueError, match=r"unknown feature name\(s\) \['c9'\]"):
        main(["extract", "--model", "densenet40_k12", "--input", str(image_dir), "--output",
              str(tmp_path / "x.npz"), "--features", "c9"])
    with pytest.raises(FileNotFoundError, match="input not found"):
        main(["extract", "--model", "densenet40_k12", "--input", str(tmp_path / "nope"), "--output",
              str(tmp_path / "x.npz")])
    with pytest.raises(ValueError, match="notes.txt: not an image file"):
        main(["extract", "--model", "densenet40_k12", "--input", str(image_dir / "notes.txt"), "--output",
              str(tmp_path / "x.npz")])
    assert torch.is_grad_enabled()

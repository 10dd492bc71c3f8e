from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

import densevision
from densevision.apps.extract import main as extract_main
from densevision.cli import main
from densevision.datasets.image_io import ImageFileError, find_images, read_rgb_image, to_tensor
from densevision.datasets.transforms import MEAN, STD
from densevision.inference.features import build_backbone, extract_features
from densevision.inference.optimize import cpu_has_fast_bf16, inference_path
from densevision.models.backbones.densenet import DenseNet
from tests.bad_files import write_bad_images
from tests.bn import randomize_bn_statistics


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
    common = ["extract", "--model", "densenet40_k12", "--weights", str(weights), "--image-size", "32", "24",
              "--no-bf16"]  # float32 on every CPU, so batching cannot change the rows
    code = main([*common, "--input", str(image_dir), "--output", str(out), "--features", "c0,c2",
                 "--batch-size", "2"])
    assert code == 0 and "3 images;" in capsys.readouterr().out
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


def test_extract_rejects_bad_requests(image_dir, tmp_path, capsys):
    """The library raises naming the problem; the command prints it as one line and exits 1."""
    common = ["--model", "densenet40_k12", "--output", str(tmp_path / "x.npz")]
    cases = [
        (["--input", str(image_dir), "--features", "c9"], ValueError, r"unknown feature name\(s\) \['c9'\]"),
        (["--input", str(tmp_path / "nope")], FileNotFoundError, "input not found"),
        (["--input", str(image_dir / "notes.txt")], ValueError, "notes.txt: not an image file"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            extract_main([*common, *args])
        capsys.readouterr()
        assert main(["extract", *common, *args]) == 1
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err
    assert torch.is_grad_enabled()


def test_extract_skips_unreadable_images(image_dir, tmp_path, caplog, capsys):
    write_bad_images(image_dir / "bad")
    out = tmp_path / "f.npz"
    weights = tmp_path / "w.pth"  # given, so the only warning is about the unreadable files
    torch.save(densevision.create_model("densenet40_k12").state_dict(), weights)
    common = ["extract", "--model", "densenet40_k12", "--weights", str(weights), "--input", str(image_dir),
              "--image-size", "16", "16",
              "--features", "c0", "--no-bf16", "--batch-size", "2", "--no-progress"]
    with caplog.at_level(logging.INFO, logger="densevision"):
        assert main([*common, "--output", str(out)]) == 0
    data = np.load(out)
    assert list(data["image_files"]) == ["a.png", "b.jpg", "sub/c.png"] and data["c0"].shape[0] == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 4 of 7 unreadable image(s)" in warnings[0]
    assert all(name in warnings[0] for name in ("bomb.png", "empty.png", "text.png", "truncated.png"))
    with pytest.raises(ImageFileError, match="bad/bomb.png: too large"):
        extract_main([*common[1:], "--output", str(tmp_path / "strict.npz"), "--strict"])
    assert not (tmp_path / "strict.npz").exists()


def test_extract_checks_the_output_folder_before_any_work(image_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    # an unknown model would fail later: the output folder is refused first
    code = main(["extract", "--model", "no_such_model", "--input", str(image_dir), "--output",
                 str(blocker / "f.npz")])
    assert code == 1 and f"output folder {blocker} is not writable" in capsys.readouterr().err


def _tiny_backbone() -> DenseNet:
    model = DenseNet(growth_rate=4, block_config=(2, 2), stem_channels=8, features_only=True)
    return randomize_bn_statistics(model).eval()  # a wrong fold would show


@pytest.mark.parametrize("path", ["optimized fp32", "eager", "optimized bf16"])
def test_extract_paths_match_the_eager_backbone(image_dir, path):
    """The float32 features are the eager backbone's: to ~1e-5 on the optimised fp32 path and without it
    (batches of 2 vs 3 alone change the last bits), and within 2% of each map's range with bf16 (tested
    only where the CPU has it natively)."""
    if path == "optimized bf16" and not cpu_has_fast_bf16():
        pytest.skip("no AMX / AVX512-BF16 on this CPU: the default path is float32")
    backbone, files, size = _tiny_backbone(), find_images(image_dir), (32, 24)
    runner = inference_path(backbone, optimize=path != "eager", bf16=path == "optimized bf16")
    features = extract_features(runner, files, image_size=size, batch_size=2, progress=False)
    batch = torch.stack([to_tensor(read_rgb_image(f), size, MEAN, STD) for f in files])
    with torch.no_grad():
        expected = {name: value.numpy() for name, value in backbone(batch).items()}
    assert list(features) == list(expected) == [s.name for s in backbone.feature_info]
    for name, ref in expected.items():
        assert features[name].dtype == np.float32
        if path == "optimized bf16":
            assert np.abs(features[name] - ref).max() <= 0.02 * (ref.max() - ref.min())
        else:
            np.testing.assert_allclose(features[name], ref, rtol=1e-5, atol=1e-5)


def test_extract_rejects_bf16_without_the_optimised_path(image_dir, tmp_path):
    with pytest.raises(ValueError, match="--bf16 and --compile choose how the optimised path runs"):
        extract_main(["--model", "densenet40_k12", "--input", str(image_dir), "--output",
                      str(tmp_path / "x.npz"), "--no-optimize", "--bf16"])

"""Messages a run no longer prints, each silenced where it arises (issue 29 row 11); the Ctrl+C and resume
notes are checked in ``test_resume.py``, the seed note in ``test_cli_first_steps.py``."""

from __future__ import annotations

import warnings

import numpy as np
from lightning.pytorch import Trainer

from densevision.datasets.detection_transforms import detection_eval_transforms
from densevision.models.segmentation.tiramisu import FCDenseNet
from densevision.tasks.callbacks import RestoreRngState, SaveOnInterrupt, StopOnNonFiniteLoss
from densevision.tasks.segmentation import SegmentationTask


def test_a_second_run_of_the_same_trainer_overrides_no_callback(tmp_path) -> None:
    """The demo validates and predicts with the trainer it fitted: the task's callbacks are already there,
    so it returns none for Lightning to override ("configure_callbacks will override ...")."""
    task = SegmentationTask(FCDenseNet(num_classes=2, growth_rate=4, down_blocks=[1], bottleneck_layers=1,
                                       stem_channels=8), num_classes=2)
    fresh = Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    task.trainer = fresh
    needed = {StopOnNonFiniteLoss, RestoreRngState, SaveOnInterrupt}
    assert {type(c) for c in task.configure_callbacks()} == needed
    fitted = Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                     callbacks=[StopOnNonFiniteLoss(), RestoreRngState(), SaveOnInterrupt()])
    task.trainer = fitted
    assert task.configure_callbacks() == []


def test_evaluation_transforms_do_not_warn_about_an_unused_box_processor() -> None:
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = detection_eval_transforms()(image=image, bboxes=[[1, 2, 10, 12]], labels=[1], ann_index=[0])
    assert [str(w.message) for w in caught] == []
    np.testing.assert_allclose(np.asarray(out["bboxes"]), [[1, 2, 10, 12]], atol=1e-4)
    assert out["image"].shape == image.shape

"""Segmentation losses against values computed by hand on tiny tensors; ignore_index, class weights,
perfect predictions at the minimum, weighted sums, and the YAML form (factories parsed by jsonargparse)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from jsonargparse import ArgumentParser

from densevision.tasks.losses import CrossEntropy, Dice, Focal, LossFactory, LovaszSoftmax, WeightedSum

IGNORE = 5


def _two_pixel_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes, three pixels: p(class 1) = 0.8, 0.4, 0.5; targets 1, 0 and ignored."""
    p1 = torch.tensor([0.8, 0.4, 0.5], dtype=torch.float64)
    logits = torch.stack([torch.log(1 - p1), torch.log(p1)])[None, :, None, :]  # (1, 2, 1, 3)
    target = torch.tensor([[[1, 0, IGNORE]]])
    return logits, target


def test_cross_entropy_by_hand():
    logits, target = _two_pixel_case()
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert CrossEntropy(IGNORE)(logits, target).item() == pytest.approx(expected)
    weighted = -(3 * math.log(0.8) + 1 * math.log(0.6)) / 4
    assert CrossEntropy(IGNORE, [1.0, 3.0])(logits, target).item() == pytest.approx(weighted)


def test_focal_by_hand_and_gamma_zero_is_cross_entropy():
    logits, target = _two_pixel_case()
    fl = [-(0.2**2) * math.log(0.8), -(0.4**2) * math.log(0.6)]
    assert Focal(IGNORE)(logits, target).item() == pytest.approx(sum(fl) / 2)
    assert Focal(IGNORE, [1.0, 3.0])(logits, target).item() == pytest.approx((3 * fl[0] + fl[1]) / 4)
    random_logits, random_target = torch.randn(2, 4, 3, 5), torch.randint(0, 4, (2, 3, 5))
    torch.testing.assert_close(
        Focal(None, [1.0, 2.0, 0.5, 1.0], gamma=0)(random_logits, random_target),
        F.cross_entropy(random_logits, random_target, weight=torch.tensor([1.0, 2.0, 0.5, 1.0])),
    )


def test_dice_by_hand():
    logits, target = _two_pixel_case()
    # class 1: overlap 0.8, sum p 1.2, sum y 1; class 0: overlap 0.6, sum p 0.8, sum y 1
    dice1, dice0 = 1.6 / 2.2, 1.2 / 1.8
    assert Dice(IGNORE, smooth=0)(logits, target).item() == pytest.approx(1 - (dice0 + dice1) / 2)
    weighted = ((1 - dice0) + 3 * (1 - dice1)) / 4
    assert Dice(IGNORE, [1.0, 3.0], smooth=0)(logits, target).item() == pytest.approx(weighted)
    smoothed = 1 - ((1.2 + 1) / (1.8 + 1) + (1.6 + 1) / (2.2 + 1)) / 2
    assert Dice(IGNORE, smooth=1)(logits, target).item() == pytest.approx(smoothed)


def test_lovasz_softmax_by_hand():
    logits, target = _two_pixel_case()
    # class 1: errors 0.2 (truth 1), 0.4 (truth 0); sorted [0.4, 0.2], truths [0, 1]: Jaccard losses
    # [1 - 1/2, 1 - 0/2] = [0.5, 1], gradient [0.5, 0.5], loss 0.3. Class 0: errors 0.2 (truth 0),
    # 0.4 (truth 1); sorted truths [1, 0]: Jaccard [1 - 0/1, 1 - 0/2] = [1, 1], gradient [1, 0], loss 0.4.
    assert LovaszSoftmax(IGNORE)(logits, target).item() == pytest.approx((0.3 + 0.4) / 2)
    assert LovaszSoftmax(IGNORE, [1.0, 3.0])(logits, target).item() == pytest.approx((0.4 + 3 * 0.3) / 4)


def test_lovasz_counts_absent_classes_only_when_asked():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))[None, :, None, None].repeat(1, 1, 1, 2)  # 3 classes
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    present = LovaszSoftmax()(logits, target).item()
    # class 0 errors 0.3, 0.3, truths [1, 1]: Jaccard [1 - 1/2, 1 - 0/2], gradient [0.5, 0.5] -> 0.3
    assert present == pytest.approx(0.3)
    # absent classes: the largest error (0.2, 0.1) each
    assert LovaszSoftmax(present_only=False)(logits, target).item() == pytest.approx((0.3 + 0.2 + 0.1) / 3)


def test_weighted_sum_by_hand():
    logits, target = _two_pixel_case()
    loss = WeightedSum(IGNORE, None, terms=[CrossEntropy, Dice], coefficients=[1.0, 0.5])
    expected = CrossEntropy(IGNORE)(logits, target) + 0.5 * Dice(IGNORE)(logits, target)
    torch.testing.assert_close(loss(logits, target), expected)
    assert all(term.ignore_index == IGNORE for term in loss.terms)
    with pytest.raises(ValueError, match=r"one coefficient per term, got 2 terms and coefficients \[1.0\]"):
        WeightedSum(terms=[CrossEntropy, Dice], coefficients=[1.0])


LOSSES = [CrossEntropy, Focal, Dice, LovaszSoftmax]


@pytest.mark.parametrize("loss_class", LOSSES, ids=lambda c: c.__name__)
def test_perfect_prediction_gives_the_minimum(loss_class):
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 6, 7))
    target[0, :2] = IGNORE
    loss = loss_class(IGNORE, [1.0, 2.0, 0.5, 1.5])
    perfect = 30.0 * F.one_hot(target.clamp(max=3), 4).movedim(-1, 1).double()
    best = loss(perfect, target).item()
    assert best == pytest.approx(0.0, abs=1e-6)
    for _ in range(5):
        assert loss(perfect + 3 * torch.randn_like(perfect), target).item() > best


@pytest.mark.parametrize("loss_class", LOSSES, ids=lambda c: c.__name__)
def test_ignored_pixels_count_nowhere(loss_class):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    target[:, 0] = IGNORE
    loss = loss_class(IGNORE)
    value = loss(logits, target)
    value.backward()
    assert (logits.grad[:, :, 0] == 0).all() and logits.grad[:, :, 1:].abs().sum() > 0
    changed = logits.detach().clone()
    changed[:, :, 0] = 100 * torch.randn(2, 3, 5)
    torch.testing.assert_close(loss(changed, target), value.detach())
    all_void = torch.full_like(target, IGNORE)
    assert loss(logits, all_void).item() == 0.0


def test_class_weight_count_must_match_the_logits():
    with pytest.raises(ValueError, match=r"Dice: 2 class_weights for logits with 3 classes"):
        Dice(None, [1.0, 2.0])(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expects logits \(N, C, H, W\) and target \(N, H, W\), got"):
        Focal()(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))


def _parse(loss_config: dict) -> torch.nn.Module:
    def build(loss: LossFactory) -> LossFactory:
        return loss

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(build, "task")
    factory = parser.instantiate(parser.parse_object({"task": {"loss": loss_config}})).task
    return build(**factory)(IGNORE, torch.tensor([1.0, 3.0]))


def test_losses_parse_from_yaml_as_factories():
    loss = _parse({
        "class_path": "densevision.tasks.losses.WeightedSum",
        "init_args": {
            "terms": [
                {"class_path": "densevision.tasks.losses.CrossEntropy"},
                {"class_path": "densevision.tasks.losses.Focal", "init_args": {"gamma": 1.0}},
            ],
            "coefficients": [1.0, 2.0],
        },
    })  # fmt: skip
    assert isinstance(loss.terms[1], Focal) and loss.terms[1].gamma == 1.0
    assert loss.terms[1].ignore_index == IGNORE and loss.terms[1].class_weights.tolist() == [1.0, 3.0]
    assert loss.coefficients == [1.0, 2.0]
    with pytest.raises(Exception, match="gama"):  # a typo fails when the config is parsed
        _parse({"class_path": "densevision.tasks.losses.Focal", "init_args": {"gama": 1.0}})

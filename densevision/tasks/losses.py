"""Segmentation losses, chosen in a task's config: cross-entropy, Dice, focal, Lovasz-softmax and weighted
sums of them.

Every loss maps (N, C, H, W) logits and an (N, H, W) int64 target to a scalar. Pixels whose target is
``ignore_index`` count nowhere (they get no gradient); ``class_weights`` (C,) weight the classes. Both
belong to the label space, which the data module states (``densevision.cli`` links them into the task),
so a loss receives them from the task instead of from its own config: the task's ``loss`` argument is
a *factory* ``(ignore_index, class_weights) -> loss``, and in YAML a ``class_path`` whose ``init_args``
hold only the loss's own settings, as with optimizers::

    loss:
      class_path: densevision.tasks.losses.WeightedSum
      init_args:
        terms:
          - class_path: densevision.tasks.losses.CrossEntropy
          - class_path: densevision.tasks.losses.Dice
        coefficients: [1.0, 0.5]

In Python, a loss is built directly: ``Dice(ignore_index=11, class_weights=weights)``.

A batch whose pixels are all ignored gives a loss of 0 (with a gradient of zeros) rather than NaN, so
a random crop that holds only void does not stop training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ClassWeights = Tensor | Sequence[float]
"""Per-class loss weights: a (C,) tensor or a list of C floats."""
LossFactory = Callable[[int | None, Tensor | None], nn.Module]
"""``(ignore_index, class_weights) -> loss module``: every loss class here is one."""


class _SegmentationLoss(nn.Module):
    """Holds the label space: ``ignore_index`` and the class weights (a non-persistent buffer: it follows
    the module's device, and checkpoints keep the task's copy only)."""

    def __init__(self, ignore_index: int | None, class_weights: ClassWeights | None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weights is not None and (weights.dim() != 1 or (weights < 0).any()):
            raise ValueError(f"class_weights must be a 1-D sequence of weights >= 0, got {class_weights}")
        self.register_buffer("class_weights", weights, persistent=False)

    def _check(self, logits: Tensor, target: Tensor) -> None:
        if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"{type(self).__name__} expects logits (N, C, H, W) and target (N, H, W), got "
                f"{tuple(logits.shape)} and {tuple(target.shape)}"
            )
        if self.class_weights is not None and len(self.class_weights) != logits.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: {len(self.class_weights)} class_weights for logits with "
                f"{logits.shape[1]} classes"
            )

    def _valid(self, target: Tensor) -> Tensor:
        """(N, H, W) bool: the pixels that count."""
        if self.ignore_index is None:
            return torch.ones_like(target, dtype=torch.bool)
        return target != self.ignore_index

    def _flat(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The counted pixels as (P, C) logits and (P,) classes."""
        valid = self._valid(target)
        return logits.movedim(1, -1)[valid], target[valid]

    def _probabilities(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Checks the shapes, then the counted pixels' (P, C) softmax probabilities (at least float32)
        and their (P, C) one-hot targets in the same dtype; P is 0 when every pixel is ignored."""
        self._check(logits, target)
        flat, classes = self._flat(logits, target)
        probs = _at_least_float32(flat).softmax(1)
        return probs, F.one_hot(classes, logits.shape[1]).to(probs.dtype)

    def _class_mean(self, per_class: Tensor, counted: Tensor) -> Tensor:
        """Mean of (C,) per-class losses over the ``counted`` classes, weighted by ``class_weights``."""
        weights = counted.to(per_class.dtype)
        if self.class_weights is not None:
            weights = weights * self.class_weights.to(per_class.dtype)
        total = weights.sum()
        return (per_class * weights).sum() / total if total > 0 else per_class.sum() * 0


def _at_least_float32(x: Tensor) -> Tensor:
    """Softmax statistics in float32 even for half-precision logits; float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class CrossEntropy(_SegmentationLoss):
    """Pixel-wise cross-entropy, the weighted mean over counted pixels (``F.cross_entropy``'s).

    Args:
        ignore_index: target value that counts nowhere, or None.
        class_weights: (C,) weights, or None.
        label_smoothing: as in ``F.cross_entropy``.
    """

    def __init__(
        self, ignore_index: int | None = None, class_weights: ClassWeights | None = None, *,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(ignore_index, class_weights)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """(N, C, H, W) logits, (N, H, W) classes -> scalar."""
        self._check(logits, target)
        if not self._valid(target).any():
            return logits.sum() * 0
        ignore = -100 if self.ignore_index is None else self.ignore_index
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        return F.cross_entropy(
            logits, target, weight=weight, ignore_index=ignore, label_smoothing=self.label_smoothing
        )


class Focal(_SegmentationLoss):
    """Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), multi-class:
    ``-(1 - p_t) ** gamma * log(p_t)`` per pixel, ``p_t`` the probability of the true class; the mean over
    counted pixels, weighted by the true class's weight (the paper's alpha) as cross-entropy weights it.
    ``gamma = 0`` is cross-entropy.

    Args:
        ignore_index, class_weights: see ``CrossEntropy``.
        gamma: focusing exponent (the paper's 2): well-classified pixels weigh less.
    """

    def __init__(
        self, ignore_index: int | None = None, class_weights: ClassWeights | None = None, *,
        gamma: float = 2.0,
    ) -> None:
        super().__init__(ignore_index, class_weights)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """(N, C, H, W) logits, (N, H, W) classes -> scalar."""
        self._check(logits, target)
        flat, classes = self._flat(logits, target)
        if classes.numel() == 0:
            return logits.sum() * 0
        log_pt = F.log_softmax(_at_least_float32(flat), dim=1).gather(1, classes[:, None])[:, 0]
        loss = -((1 - log_pt.exp()) ** self.gamma) * log_pt
        if self.class_weights is None:
            return loss.mean()
        weights = self.class_weights.to(loss.dtype)[classes]
        return (loss * weights).sum() / weights.sum()


class Dice(_SegmentationLoss):
    """Soft Dice loss (Milletari et al., V-Net, 3DV 2016), over the whole batch: per class
    ``1 - (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth)`` on the counted pixels with softmax
    probabilities ``p`` and one-hot targets ``y``, then the mean over classes weighted by
    ``class_weights``. It scores each class by overlap, whatever its pixel count, which helps thin classes.

    Args:
        ignore_index, class_weights: see ``CrossEntropy``.
        smooth: added to numerator and denominator; keeps a class absent from target and prediction at
            a loss of 0 and the gradient finite.
        present_only: average only over the classes present in the batch's target.
    """

    def __init__(
        self, ignore_index: int | None = None, class_weights: ClassWeights | None = None, *,
        smooth: float = 1.0, present_only: bool = False,
    ) -> None:
        super().__init__(ignore_index, class_weights)
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = smooth
        self.present_only = present_only

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """(N, C, H, W) logits, (N, H, W) classes -> scalar."""
        probs, onehot = self._probabilities(logits, target)
        if len(probs) == 0:
            return logits.sum() * 0
        overlap = (probs * onehot).sum(0)
        total = probs.sum(0) + onehot.sum(0)
        dice = (2 * overlap + self.smooth) / (total + self.smooth).clamp(min=torch.finfo(probs.dtype).tiny)
        counted = onehot.sum(0) > 0 if self.present_only else torch.ones_like(dice, dtype=torch.bool)
        return self._class_mean(1 - dice, counted)


def _lovasz_grad(sorted_truth: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted in decreasing order, from the
    (C, P) 0/1 truths in that order, one row per class (Berman et al. 2018, Alg. 1)."""
    positives = sorted_truth.sum(1, keepdim=True)
    intersection = positives - sorted_truth.cumsum(1)
    union = positives + (1 - sorted_truth).cumsum(1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)


class LovaszSoftmax(_SegmentationLoss):
    """Lovasz-softmax loss (Berman, Rannen Triki, Blaschko, "The Lovasz-Softmax loss: A tractable surrogate
    for the optimization of the intersection-over-union measure in neural networks", CVPR 2018): per
    class, the Lovasz extension of the Jaccard loss at the pixel errors ``|y - p|``, over the whole batch;
    then the mean over classes weighted by ``class_weights``. A direct surrogate of the mIoU the
    benchmarks report; it is commonly used after or together with cross-entropy.

    Args:
        ignore_index, class_weights: see ``CrossEntropy``.
        present_only: average only over the classes present in the batch's target (the paper's
            default: an absent class's loss only pushes its probabilities down).
    """

    def __init__(
        self, ignore_index: int | None = None, class_weights: ClassWeights | None = None, *,
        present_only: bool = True,
    ) -> None:
        super().__init__(ignore_index, class_weights)
        self.present_only = present_only

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """(N, C, H, W) logits, (N, H, W) classes -> scalar."""
        probs, onehot = self._probabilities(logits, target)
        if len(probs) == 0:
            return logits.sum() * 0
        truth = onehot.t()  # (C, P): one sort per row
        errors, order = (truth - probs.t()).abs().sort(1, descending=True)
        per_class = (errors * _lovasz_grad(truth.gather(1, order))).sum(1)
        counted = truth.sum(1) > 0 if self.present_only else torch.ones_like(per_class, dtype=torch.bool)
        return self._class_mean(per_class, counted)


class WeightedSum(nn.Module):
    """``sum_i coefficients[i] * terms[i](logits, target)``: e.g. cross-entropy + Dice.

    Args:
        ignore_index, class_weights: passed to every term.
        terms: loss factories (in YAML: a list of ``class_path`` / ``init_args``).
        coefficients: one per term; None = all 1.
    """

    def __init__(
        self,
        ignore_index: int | None = None,
        class_weights: Tensor | Sequence[float] | None = None,
        *,
        terms: Sequence[LossFactory],
        coefficients: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        coefficients = [1.0] * len(terms) if coefficients is None else [float(c) for c in coefficients]
        if not terms or len(coefficients) != len(terms):
            raise ValueError(
                f"WeightedSum needs one or more terms and one coefficient per term, got {len(terms)} terms "
                f"and coefficients {coefficients}"
            )
        self.terms = nn.ModuleList(term(ignore_index, class_weights) for term in terms)
        self.coefficients = coefficients

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """(N, C, H, W) logits, (N, H, W) classes -> scalar."""
        return sum(c * term(logits, target) for c, term in zip(self.coefficients, self.terms, strict=True))

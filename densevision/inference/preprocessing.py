"""The one preprocessing and postprocessing of segmentation predictions, for every path and backend.

``densevision predict --checkpoint``, ``predict --model EXPORT_DIR`` on any backend (PyTorch, ONNX Runtime,
OpenVINO), Lightning's predict (``SegmentationTask.predict_logits`` / ``predict_step``) and the
calibration images of int8 export all go through :class:`Preprocessing`:

1. the image is resized to the run's ``input_size`` (bilinear) and normalised with the run's ``mean`` /
   ``std`` (``densevision.datasets.transforms.preprocess_image``, also what evaluation in training does);
2. the network runs on the whole image, or window by window with the run's ``sliding_window`` options
   (``sliding_window_inference``: overlap, blending, flip TTA);
3. the logits are resized back to each image's own size before anyone takes the argmax.

Plain numpy and torch: no Lightning, and no model zoo (the sliding windows' module is imported when a
window is asked for), so a runtime's predictions start without importing either. A run's values come
from its hyper-parameters (:meth:`Preprocessing.from_hparams`), an export folder's from its
``densevision.json`` (:meth:`Preprocessing.from_dict`); values a run did not record (checkpoints older
than these fields) take the defaults of ``densevision.datasets.transforms`` (ImageNet statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from densevision.datasets.transforms import MEAN, STD, preprocess_image

SLIDING_WINDOW_KEYS = ("window_size", "overlap", "blend", "batch_size", "flip_tta")


def check_sliding_window(options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``sliding_window_inference``'s keyword arguments, checked (None = whole images).

    Raises:
        ValueError: an unknown key, no ``window_size``, or a bad value; names the received options.
    """
    if options is None:
        return None
    unknown = sorted(set(options) - set(SLIDING_WINDOW_KEYS))
    if unknown or "window_size" not in options:
        raise ValueError(
            f"sliding_window takes {list(SLIDING_WINDOW_KEYS)} (window_size required), got {dict(options)}"
        )
    from densevision.models.segmentation.sliding_window import check_options

    options = dict(options)
    check_options(options["window_size"], options.get("overlap", 0.25), options.get("blend", "gaussian"),
                  options.get("batch_size", 4))  # fmt: skip
    return options


def _triple(values: Sequence[float], name: str) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"{name} must hold 3 values (one per RGB channel), got {list(values)}")
    return (float(values[0]), float(values[1]), float(values[2]))


@dataclass(frozen=True)
class Preprocessing:
    """What a segmentation run does to an image before and after its network.

    Attributes:
        mean, std: per-channel statistics of RGB images scaled to [0, 1].
        input_size: (height, width) the network sees (the run's training ``resize``); None = each
            image's own size.
        sliding_window: ``sliding_window_inference`` options (``window_size``, ``overlap``, ``blend``,
            ``batch_size``, ``flip_tta``), or None for whole images.
    """

    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    input_size: tuple[int, int] | None = None
    sliding_window: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {list(self.std)}")
        if self.input_size is not None:
            object.__setattr__(self, "input_size", (int(self.input_size[0]), int(self.input_size[1])))
        object.__setattr__(self, "sliding_window", check_sliding_window(self.sliding_window))

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> Preprocessing:
        """From a task's hyper-parameters (or a ``densevision.json``); missing or None values -> defaults."""
        return cls(
            mean=tuple(hparams.get("mean") or MEAN),
            std=tuple(hparams.get("std") or STD),
            input_size=hparams.get("input_size"),
            sliding_window=hparams.get("sliding_window"),
        )

    from_dict = from_hparams

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``mean``, ``std``, ``input_size``, ``sliding_window`` (lists, not tuples)."""
        window = None if self.sliding_window is None else {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in self.sliding_window.items()
        }  # fmt: skip
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": None if self.input_size is None else list(self.input_size),
            "sliding_window": window,
        }

    def image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 network input (h, w = ``input_size`` when set)."""
        return preprocess_image(image, size=self.input_size, mean=self.mean, std=self.std)[None]

    def logits(self, forward: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
        """(N, 3, h, w) preprocessed images -> (N, C, h, w) logits: whole, or window by window."""
        if self.sliding_window is None:
            return forward(images)
        from densevision.models.segmentation.sliding_window import sliding_window_inference

        return sliding_window_inference(forward, images, **self.sliding_window)

    @staticmethod
    def postprocess(logits: Tensor, size: Sequence[int]) -> Tensor:
        """(N, C, h, w) logits -> (N, C, H, W) float32 at ``size`` = (H, W), the image's own size.

        The bilinear resize of ``densevision.models.segmentation.base.resize_logits`` (what the tasks score),
        called here directly: importing the model package would add its whole import to every runtime's
        start-up.
        """
        logits = logits.float()
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def predict(
        self, forward: Callable[[Tensor], Tensor], image: np.ndarray, device: torch.device | str = "cpu"
    ) -> Tensor:
        """(H, W, 3) uint8 image -> (C, H, W) float32 logits at its own size, on the CPU."""
        x = torch.from_numpy(self.image(image)).to(device)
        return self.postprocess(self.logits(forward, x), image.shape[:2])[0].cpu()

    def with_window(self, window_size: Sequence[int] | None, flip_tta: bool = False) -> Preprocessing:
        """A copy with ``window_size`` replacing (or adding) the window and flip TTA turned on.

        Raises:
            ValueError: ``flip_tta`` without any window and without an ``input_size`` to take it from.
        """
        options = dict(self.sliding_window or {})
        if window_size is not None:
            options["window_size"] = tuple(int(v) for v in window_size)
        if flip_tta:
            options["flip_tta"] = True
            if "window_size" not in options:
                if self.input_size is None:
                    raise ValueError(
                        "--flip-tta: this run predicts images at their own size (no input_size in the "
                        "checkpoint); give the window too: --window-size H W"
                    )
                options["window_size"] = self.input_size
        return Preprocessing(self.mean, self.std, self.input_size, options or None)


def numpy_forward(run: Callable[[np.ndarray], np.ndarray]) -> Callable[[Tensor], Tensor]:
    """A backend's ``(N, 3, H, W) float32 array -> (N, C, H, W) array`` as a tensor function, so sliding
    windows and postprocessing are the same code for every backend."""

    def forward(x: Tensor) -> Tensor:
        return torch.from_numpy(np.asarray(run(np.ascontiguousarray(x.detach().cpu().numpy())), np.float32))

    return forward

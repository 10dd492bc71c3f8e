"""Image files for the tools (extract, predict): finding them and reading them as model inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from densevision.datasets.transforms import MEAN, STD

# What torchvision's ImageNet weights and densevision's segmentation presets expect.
IMAGENET_MEAN = MEAN  # the data package's presets are the one source of dataset statistics
IMAGENET_STD = STD
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def find_images(path: str | Path) -> list[Path]:
    """``path`` itself if it is an image file, else the image files under the folder ``path``, sorted.

    Raises:
        FileNotFoundError: ``path`` does not exist, or the folder holds no image file.
        ValueError: ``path`` is a file without an image suffix.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{path}: not an image file; expected one of {IMAGE_SUFFIXES}")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input not found: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    return files


def read_rgb(path: Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB array."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"image {path}: cannot be read ({err})") from err


def to_tensor(
    image: np.ndarray,
    size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """(H, W, 3) uint8 -> (3, H', W') float in [0, 1], resized to ``size`` (bilinear, aspect ratio not
    kept) and normalised by ``mean`` / ``std`` when given."""
    x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0]
    if mean is not None and std is not None:
        x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x


class ImageFiles(Dataset):
    """Image files as ``(index, (3, H, W) tensor)`` pairs, all resized to ``size``, for a DataLoader."""

    def __init__(
        self,
        files: Sequence[Path],
        size: Sequence[int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.files = list(files)
        self.size = tuple(size)
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, Tensor]:
        return index, to_tensor(read_rgb(self.files[index]), self.size, self.mean, self.std)

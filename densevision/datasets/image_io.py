"""The one image reader of densevision, used by the datasets and by every tool (predict, extract, benchmark,
convert): finding image files, reading them as RGB arrays, turning them into model inputs, unreadable
files, oversized images, paths that leave the dataset root.

Conversions (documented in the README "Reliability" section): the EXIF orientation tag is applied (phone
photos are stored sideways with a tag saying so); grayscale, palette, CMYK and RGBA images become RGB
through PIL (RGBA drops alpha); 16-bit and 32-bit integer images (``I;16``, ``I``) are scaled to 8 bits by
their bit depth rather than clipped at 255 as PIL's ``convert("RGB")`` would. Images larger than PIL's
``Image.MAX_IMAGE_PIXELS`` (a decompression-bomb guard) are refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

# The suffixes every reader accepts (datasets, predict, extract, convert).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 or 270 degrees: width and height swap
# full-scale value of the integer modes PIL cannot convert to RGB without clipping
_WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I": 2**32 - 1}


class ImageFileError(OSError):
    """An image file that cannot be used (unreadable, truncated, too large); the message names it."""


def _to_rgb(image: Image.Image) -> np.ndarray:
    full_scale = _WIDE_MODES.get(image.mode)
    if full_scale is None:
        return np.array(image.convert("RGB"))
    if image.mode == "I":  # 32-bit PNGs do not exist; "I" is how PIL opens most 16-bit files
        full_scale = 65535 if np.asarray(image).max() <= 65535 else full_scale
    gray = (np.asarray(image, dtype=np.float64) * (255 / full_scale)).round().astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def read_rgb_image(path: Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB array, converted as the module docstring says.

    Raises:
        ImageFileError: the file is empty, not an image, truncated, or over PIL's pixel limit.
    """
    try:
        with Image.open(path) as image:
            return _to_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as err:
        raise ImageFileError(f"image {path}: too large ({err}); raise PIL.Image.MAX_IMAGE_PIXELS if the "
                             "file is trusted") from err
    except OSError as err:  # UnidentifiedImageError (empty / not an image) and truncated files
        raise ImageFileError(f"image {path}: cannot be read ({err})") from err


def check_image_file(path: Path) -> tuple[int, int]:
    """Checks that ``path`` is a readable image within the pixel limit; returns its (width, height) as
    ``read_rgb_image`` returns it (after the EXIF orientation).

    ``verify`` reads the whole file (PNG CRCs, so truncation is found) without decoding the pixels.

    Raises:
        ImageFileError: as ``read_rgb_image``.
    """
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:  # verify() leaves the image unusable: reopen for the header
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width  # as read_rgb_image returns it
            return width, height
    except Image.DecompressionBombError as err:
        raise ImageFileError(f"image {path}: too large ({err}); raise PIL.Image.MAX_IMAGE_PIXELS if the "
                             "file is trusted") from err
    except (OSError, SyntaxError) as err:  # verify() raises SyntaxError on some corrupt PNG chunks
        raise ImageFileError(f"image {path}: cannot be read ({err})") from err


def path_within(root: Path, relative: str | Path) -> Path:
    """``root / relative``, refused when it resolves (``..``, absolute paths, symlinks) outside ``root``.

    Raises:
        ImageFileError: naming the path and the root it escapes.
    """
    path = root / relative
    resolved, base = path.resolve(), root.resolve()
    if not resolved.is_relative_to(base):
        raise ImageFileError(f"{path}: resolves to {resolved}, outside the dataset root {base}")
    return path


def unseeded(transform: object) -> bool:
    """Whether ``transform`` is an albumentations pipeline built without a ``seed``."""
    return hasattr(transform, "set_random_seed") and getattr(transform, "seed", 0) is None


def reseed_from_torch(transform: object) -> None:
    """Reseeds an albumentations pipeline from torch's generator before a sample.

    albumentations draws from its own generators, seeded from OS entropy when no ``seed`` is given, which
    ``seed_everything`` and the checkpointed RNG state (``RestoreRngState``) do not reach; drawing the seed
    from torch (seeded per DataLoader worker) makes augmentation repeat with the run's seed and resume
    exactly.
    """
    transform.set_random_seed(int(torch.randint(2**31 - 1, ()).item()))


def is_image_file(path: Path) -> bool:
    """Whether ``path`` names a file with one of ``IMAGE_SUFFIXES`` (any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(path: str | Path) -> list[Path]:
    """``path`` itself if it is an image file, else the image files under the folder ``path`` (recursive),
    sorted.

    Raises:
        FileNotFoundError: ``path`` does not exist, or the folder holds no image file.
        ValueError: ``path`` is a file without an image suffix.
    """
    path = Path(path)
    if path.is_file():
        if not is_image_file(path):
            raise ValueError(f"{path}: not an image file; expected one of {', '.join(IMAGE_SUFFIXES)}")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input not found: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    return files


def output_names(files: Sequence[Path], root: Path, suffix: str = ".png") -> list[Path]:
    """One output path per input, relative to the input folder ``root`` (``a/x.png`` and ``b/x.png`` stay
    apart), with ``suffix``; two inputs that would still meet (``x.png`` and ``x.jpg``) keep their own
    suffix too (``x.png.png``, ``x.jpg.png``). A single file input gives its name."""
    relative = [Path(f.relative_to(root)) if root.is_dir() else Path(f.name) for f in files]
    names = [r.with_suffix(suffix) for r in relative]
    counts: dict[Path, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    pairs = zip(relative, names, strict=True)
    return [r.with_name(r.name + suffix) if counts[n] > 1 else n for r, n in pairs]


def check_writable(folder: Path) -> Path:
    """Creates ``folder`` (and its parents) and checks a file can be written in it, before any work.

    Raises:
        PermissionError: naming the folder and what the system said.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".densevision-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"output folder {folder} is not writable ({err.strerror or err})") from err
    return folder


def skipped_message(skipped: Sequence[tuple[Path, str]], total: int, shown: int = 10) -> str:
    """One message listing unreadable inputs: ``skipped N of M unreadable image(s) (--strict stops at the
    first): ...`` with the first ``shown`` reasons."""
    listed = "\n  ".join(reason for _, reason in skipped[:shown])
    more = f"\n  ... and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return (f"skipped {len(skipped)} of {total} unreadable image(s) (--strict stops at the first):\n  "
            f"{listed}{more}")


def bounded_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """(height, width) scaled down (aspect ratio kept) so the longer side is at most ``max_size``."""
    if max_size is None or max(height, width) <= max_size:
        return height, width
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 (``size`` = (h, w)), with PIL's antialiasing bilinear filter."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


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
        return index, to_tensor(read_rgb_image(self.files[index]), self.size, self.mean, self.std)

"""Reading dataset image files safely: RGB conversion, unreadable files, oversized images, paths that leave
the dataset root.

Conversions (documented in the README "Reliability" section): grayscale, palette, CMYK and RGBA images
become RGB through PIL (RGBA drops alpha); 16-bit and 32-bit integer images (``I;16``, ``I``) are scaled
to 8 bits by their bit depth rather than clipped at 255 as PIL's ``convert("RGB")`` would.
Images larger than PIL's ``Image.MAX_IMAGE_PIXELS`` (a decompression-bomb guard) are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

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
            return _to_rgb(image)
    except Image.DecompressionBombError as err:
        raise ImageFileError(f"image {path}: too large ({err}); raise PIL.Image.MAX_IMAGE_PIXELS if the "
                             "file is trusted") from err
    except OSError as err:  # UnidentifiedImageError (empty / not an image) and truncated files
        raise ImageFileError(f"image {path}: cannot be read ({err})") from err


def check_image_file(path: Path) -> tuple[int, int]:
    """Checks that ``path`` is a readable image within the pixel limit; returns its (width, height).

    ``verify`` reads the whole file (PNG CRCs, so truncation is found) without decoding the pixels.

    Raises:
        ImageFileError: as ``read_rgb_image``.
    """
    try:
        with Image.open(path) as image:
            image.verify()
            return image.size
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

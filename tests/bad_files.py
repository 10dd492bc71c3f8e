"""Unreadable image files of the kinds users have: truncated, zero-byte, text named .png, and a PNG whose
header claims 20000 x 20000 pixels (a decompression bomb: refused before any pixel is decoded)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid-looking PNG header of ``side`` x ``side`` RGB pixels, with one tiny data chunk."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


def write_bad_images(folder: Path) -> list[Path]:
    """truncated.png, empty.png, text.png, bomb.png in ``folder``; returns them, sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    truncated = folder / "truncated.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    write_bomb_png(folder / "bomb.png")
    return sorted(folder / n for n in ("truncated.png", "empty.png", "text.png", "bomb.png"))

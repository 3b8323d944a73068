"""The bad-image corpus: each case written on demand, so no binary lives in the repo.

``CASES`` maps a case name to (writer, expected): "error" cases must stop an
audit with one line naming the file (exit 2) or, with ``on_bad_sample: skip``,
be left out and listed; "ok" cases are unusual but valid and must be read.
Listed with what each gets in docs/bad-input.md.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

SIDE = 32


def _rgb(seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((SIDE, SIDE, 3)) * 255).astype(np.uint8))


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def empty(path: Path) -> None:
    path.write_bytes(b"")


def truncated_png(path: Path) -> None:
    path.write_bytes(_png_bytes(_rgb())[:200])


def truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    _rgb().save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def not_an_image(path: Path) -> None:
    path.write_text("name,value\nthis is a CSV file with an image's name\n")


def one_pixel(path: Path) -> None:
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)


def decompression_bomb(path: Path) -> None:
    """A PNG whose header says 20,000 x 20,000: refused by size before any decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def cmyk_jpeg(path: Path) -> None:
    _rgb(1).convert("CMYK").save(path, format="JPEG")


def sixteen_bit(path: Path) -> None:
    Image.fromarray((np.random.default_rng(2).random((SIDE, SIDE)) * 65535).astype(np.uint16)).save(path)


def palette_with_transparency(path: Path) -> None:
    image = _rgb(3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    image.save(path, transparency=0)


def wrong_extension(path: Path) -> None:
    path.write_bytes(_png_bytes(_rgb(4)))  # PNG bytes in a file named .jpg


CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # name: (file name, writer, "error" or "ok")
    "empty file": ("empty.png", empty, "error"),
    "truncated PNG": ("truncated.png", truncated_png, "error"),
    "truncated JPEG": ("truncated.jpg", truncated_jpeg, "error"),
    "not an image": ("notes.png", not_an_image, "error"),
    "one pixel": ("tiny.png", one_pixel, "error"),
    "decompression bomb": ("bomb.png", decompression_bomb, "error"),
    "CMYK JPEG": ("cmyk.jpg", cmyk_jpeg, "ok"),
    "16-bit grayscale": ("sixteen.png", sixteen_bit, "ok"),
    "palette with transparency": ("palette.png", palette_with_transparency, "ok"),
    "wrong extension": ("really_png.jpg", wrong_extension, "ok"),
}

"""The FER2013 CSV (``emotion,pixels,Usage``): 48×48 grayscale faces, seven emotions.

Read lazily: the file is scanned once for the byte offset of each row in the
chosen splits, and a row is parsed only when its sample is asked for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from xai_audit.api import DataError, Dataset, DatasetPlugin, LoadContext, Options, Sample

#: FER2013's labels, in their standard order (emotion 0..6)
FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
SIDE = 48


class Fer2013Options(Options):
    path: str = Field(..., description="fer2013.csv")
    usage: list[Literal["Training", "PublicTest", "PrivateTest"]] | None = Field(
        None, description="splits to read (the Usage column); default: all"
    )


class Fer2013Plugin(DatasetPlugin):
    name = "fer2013-csv"
    description = "The FER2013 CSV: 48x48 grayscale faces, seven emotions, Usage as split."
    Options = Fer2013Options

    def load(self, context: LoadContext) -> Dataset:
        path = Path(self.options.path).expanduser()
        path = path if path.is_absolute() else context.base_dir / path
        return Fer2013Dataset(path, self.options.usage)


class Fer2013Dataset(Dataset):
    classes = list(FER_CLASSES)
    group_names = ["usage"]
    region_names: list[str] = []

    def __init__(self, path: Path, usage: list[str] | None = None):
        if not path.is_file():
            raise DataError(f"{path}: FER2013 CSV not found")
        self.path = path
        self.usage = usage
        self._offsets: list[tuple[int, int]] = []  # (byte offset, line number)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            header = f.readline()
            digest.update(header)
            columns = [c.strip().lower() for c in header.decode("utf-8", "replace").strip().split(",")]
            if columns[:2] != ["emotion", "pixels"]:
                raise DataError(f"{path}:1: expected the columns emotion,pixels[,Usage], found {','.join(columns)}")
            self._has_usage = len(columns) > 2
            offset, line_no = f.tell(), 1
            for raw in iter(f.readline, b""):
                line_no += 1
                digest.update(raw)
                if raw.strip():
                    split = raw.rsplit(b",", 1)[-1].strip().decode() if self._has_usage else ""
                    if usage is None or split in usage:
                        self._offsets.append((offset, line_no))
                offset = f.tell()
        self._sha256 = digest.hexdigest()
        if not self._offsets:
            raise DataError(f"{path}: no rows" + (f" with Usage in {usage}" if usage else ""))

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        offset, line_no = self._offsets[index]
        with open(self.path, "rb") as f:
            f.seek(offset)
            raw = f.readline().decode("utf-8", "replace").strip()
        parts = raw.split(",")
        where = f"{self.path}:{line_no}"
        try:
            label = int(parts[0])
            pixels = np.array(parts[1].split(), dtype=np.float32)
        except (ValueError, IndexError):
            raise DataError(f"{where}: cannot parse the row (expected emotion,pixels,Usage)") from None
        if not 0 <= label < len(FER_CLASSES):
            raise DataError(f"{where}: emotion {label} is not one of 0..6")
        if pixels.size != SIDE * SIDE:
            raise DataError(f"{where}: {pixels.size} pixel values, expected {SIDE * SIDE}")
        gray = np.clip(pixels.reshape(SIDE, SIDE) / 255.0, 0, 1)
        usage = parts[2].strip() if self._has_usage and len(parts) > 2 else ""
        return Sample(id=f"fer-{line_no:06d}", image=np.repeat(gray[None], 3, axis=0), label=label, groups={"usage": usage})

    def fingerprint(self) -> str:
        return hashlib.sha256(f"fer2013-csv/1|{self._sha256}|{self.usage}".encode()).hexdigest()

    def files(self) -> list[Path]:
        return [self.path]

    def describe(self) -> dict[str, Any]:
        return {
            "source": str(self.path),
            "format": "FER2013 CSV, 48x48 grayscale (shown as RGB with equal channels)",
            "usage": ", ".join(self.usage) if self.usage else "all",
            "n_samples": len(self),
        }

"""jsonl: images listed in a JSON-lines file, one object a line, with a label and group columns.

    {"path": "img/0001.png", "label": "cat", "site": "A", "camera": "phone"}

``path`` is relative to the file's folder; ``label`` may be null (unlabelled);
every other key is a group column, and every line must have the same ones.
The images (PNG, or anything Pillow reads) must all have one size.

    dataset:
      loader: jsonl
      path: data/test.jsonl
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from xai_audit.api import DataError, Dataset, DatasetPlugin, LoadContext, Options, Sample, hookimpl


class JsonlOptions(Options):
    path: str = Field(description="the .jsonl file, relative to the plan's folder")
    classes: list[str] | None = Field(None, description="class names in label order (default: the sorted labels)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class JsonlDataset(Dataset):
    """The file is read when the data set is built; each image when its sample is asked for."""

    def __init__(self, file: Path, classes: list[str] | None):
        self.file = file
        self._rows: list[tuple[str, Path, str | None, dict[str, str]]] = []  # id, image, label, groups
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{file}: cannot read: {exc}") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}: line {number}: not JSON: {exc.msg}") from None
            if not isinstance(row, dict) or not isinstance(row.get("path"), str):
                raise DataError(f"{file}: line {number}: needs an object with a 'path'")
            groups = {k: str(v) for k, v in row.items() if k not in ("path", "label")}
            if self._rows and sorted(groups) != sorted(self._rows[0][3]):
                raise DataError(f"{file}: line {number}: group columns {sorted(groups)}, "
                                f"the first line has {sorted(self._rows[0][3])}")
            label = None if row.get("label") is None else str(row["label"])
            self._rows.append((row["path"], file.parent / row["path"], label, groups))
        if not self._rows:
            raise DataError(f"{file}: lists no images")
        found = sorted({label for _, _, label, _ in self._rows if label is not None})
        unknown = sorted(set(found) - set(classes)) if classes is not None else []
        if unknown:
            raise DataError(f"{file}: label {unknown[0]!r} is not one of the classes {classes}")
        self.classes = list(classes) if classes is not None else (found or None)
        self.group_names = sorted(self._rows[0][3])
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Sample:
        from PIL import Image

        sid, image_path, label, groups = self._rows[index]
        try:
            with Image.open(image_path) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
        except OSError as exc:  # missing, unreadable or not an image: one line naming the file
            raise DataError(f"cannot read image {image_path}: {exc}") from None
        return Sample(
            id=sid,
            image=np.ascontiguousarray(rgb.transpose(2, 0, 1)),  # (3, H, W), float32 in [0, 1]
            label=None if label is None or self.classes is None else self.classes.index(label),
            groups=groups,
        )

    def fingerprint(self) -> str:
        # the listing and every image's bytes: equal fingerprints mean equal samples
        if self._fingerprint is None:
            h = hashlib.sha256(_sha256(self.file).encode())
            h.update(json.dumps(self.classes).encode())
            for _, image_path, _, _ in self._rows:
                h.update(_sha256(image_path).encode() if image_path.is_file() else b"missing")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def files(self) -> list[Path]:
        return [self.file] + [image_path for _, image_path, _, _ in self._rows]

    def describe(self) -> dict[str, Any]:
        return {"source": str(self.file), "n_samples": len(self), "group_columns": self.group_names}


class JsonlPlugin(DatasetPlugin):
    name = "jsonl"
    description = "Images listed in a JSON-lines file: path, label and group columns."
    Options = JsonlOptions

    def load(self, context: LoadContext) -> Dataset:
        path = Path(self.options.path).expanduser()
        path = path if path.is_absolute() else context.base_dir / path
        if not path.is_file():
            raise DataError(f"{path}: data set file not found")
        return JsonlDataset(path, self.options.classes)


@hookimpl
def register_datasets() -> list[type[DatasetPlugin]]:
    return [JsonlPlugin]

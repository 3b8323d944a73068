"""image-folder: images on disk, labelled by class sub-folder or by a metadata CSV.

Two layouts:

* class sub-folders: ``path/<class>/**/<image>``; the label is the folder name.
* a flat folder plus a metadata CSV with columns ``path,label`` (``path``
  relative to the CSV's folder or to ``path``; an empty ``label`` means
  unlabelled) and any extra columns, which become group attributes.

Images are read lazily, in any mode, and converted to RGB float32 in [0, 1]
(transparent images are composited over white; 16-bit images keep their
precision). Every problem is a :class:`~xai_audit.errors.DataError` whose one
line names the file (and, for the CSV, its line and column).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from xai_audit.api import DataError, Dataset, DatasetPlugin, LoadContext, Options, Sample

DEFAULT_EXTENSIONS = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"]


class ImageFolderOptions(Options):
    """Options of the ``image-folder`` data set."""

    path: str = Field(description="folder of images (relative to the plan's folder)")
    metadata: str | None = Field(
        None, description="CSV with columns path,label and optional group columns"
    )
    classes: list[str] | None = Field(
        None, description="class names in label order (default: the sorted names found)"
    )
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    size: int | None = Field(
        None, ge=1, description="resize every image to size x size (default: all must match)"
    )
    max_pixels: int = Field(
        50_000_000, ge=1, description="refuse (before decoding) an image with more pixels than this"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _to_rgb_array(im: Any) -> np.ndarray:
    """A PIL image of any mode as float32 (H, W, 3) in [0, 1]."""
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float32)
        if mode == "F":
            scale = 1.0
        elif mode == "I" and arr.size and float(arr.max()) <= 255.0:
            scale = 255.0
        else:
            scale = 65535.0
        grey = np.clip(arr / scale, 0.0, 1.0)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "L" and "transparency" in im.info:
        im = im.convert("LA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.float32) / 255.0


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    channels = []
    for c in range(3):
        plane = Image.fromarray(np.ascontiguousarray(arr[:, :, c], dtype=np.float32))
        channels.append(np.asarray(plane.resize((size, size), Image.BILINEAR)))
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)


class ImageFolderDataset(Dataset):
    """Images listed at load time and decoded on ``__getitem__``."""

    def __init__(self, options: ImageFolderOptions, base_dir: Path | str = "."):
        self.options = options
        base = Path(base_dir)
        root = Path(options.path).expanduser()
        self.root = (root if root.is_absolute() else base / root).resolve()
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        self.metadata_path: Path | None = None
        self._extensions = {e.lower() if e.startswith(".") else "." + e.lower() for e in options.extensions}
        #: (id, file, label, groups) per sample
        self._items: list[tuple[str, Path, int | None, dict[str, str]]] = []
        if options.metadata is not None:
            meta = Path(options.metadata).expanduser()
            self.metadata_path = (meta if meta.is_absolute() else base / meta).resolve()
            if not self.metadata_path.is_file():
                raise DataError(f"metadata file not found: {self.metadata_path}")
            self.layout = "metadata-csv"
            self._read_csv()
        else:
            self.layout = "class-folders"
            self._scan_folders()
        if not self._items:
            raise DataError(
                f"no images found in {self.metadata_path or self.root}"
                + ("" if self.metadata_path else f" (extensions: {', '.join(sorted(self._extensions))})")
            )
        self._expected_size: tuple[int, int] | None = None
        self._fingerprint: str | None = None
        self._read_modes: dict[int, str] = {}  # sample index -> PIL mode, as each is read

    # -- listing ---------------------------------------------------------------

    def _is_image(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in self._extensions and not path.name.startswith(".")

    def _scan_folders(self) -> None:
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            loose = [p for p in self.root.iterdir() if self._is_image(p)]
            if loose:
                raise DataError(
                    f"{self.root}: images but no class sub-folders; "
                    "for a flat folder give a metadata CSV (columns path,label)"
                )
            raise DataError(
                f"no images found in {self.root} (extensions: {', '.join(sorted(self._extensions))})"
            )
        names = [p.name for p in folders]
        if self.options.classes is not None:
            self.classes = list(self.options.classes)
            for folder in folders:
                if folder.name not in self.classes:
                    raise DataError(
                        f"{folder}: folder '{folder.name}' is not one of the classes "
                        f"({', '.join(self.classes)})"
                    )
        else:
            self.classes = names
        self.group_names = []
        for folder in folders:
            label = self.classes.index(folder.name)
            for file in sorted(folder.rglob("*")):
                if self._is_image(file) and not any(
                    part.startswith(".") for part in file.relative_to(folder).parts
                ):
                    rel = file.relative_to(self.root).as_posix()
                    self._items.append((rel, file, label, {}))

    def _read_csv(self) -> None:
        csv_path = self.metadata_path
        assert csv_path is not None
        csv_dir = csv_path.parent
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{csv_path}: cannot read the CSV: {exc}") from None
        if not rows:
            raise DataError(f"{csv_path}: line 1: empty file; expected a header with columns path,label")
        header = [h.strip() for h in rows[0]]
        missing = [c for c in ("path", "label") if c not in header]
        if missing:
            raise DataError(
                f"{csv_path}: line 1: missing column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(m) for m in missing)} (found: {', '.join(header) or 'none'})"
            )
        for col, name in enumerate(header, start=1):
            if not name:
                raise DataError(f"{csv_path}: line 1, column {col}: empty column name")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"{csv_path}: line 1: duplicate column {dupes[0]!r}")
        group_cols = [h for h in header if h not in ("path", "label")]
        given = list(self.options.classes) if self.options.classes is not None else None
        raw: list[tuple[str, Path, str, dict[str, str]]] = []
        seen: dict[Path, int] = {}
        for line, row in enumerate(rows[1:], start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{csv_path}: line {line}: {len(row)} fields, the header has {len(header)}"
                )
            values = dict(zip(header, (c.strip() for c in row)))
            rel = values["path"]
            if not rel:
                raise DataError(f"{csv_path}: line {line}, column 'path': empty path")
            candidates = [Path(rel)] if Path(rel).is_absolute() else [csv_dir / rel, self.root / rel]
            file = next((c.resolve() for c in candidates if c.is_file()), None)
            if file is None:
                looked = " or ".join(str(c) for c in candidates)
                raise DataError(f"{csv_path}: line {line}, column 'path': file not found: {looked}")
            if file in seen:
                raise DataError(
                    f"{csv_path}: line {line}, column 'path': {rel} is listed twice "
                    f"(also on line {seen[file]})"
                )
            seen[file] = line
            label = values["label"]
            if label and given is not None and label not in given:
                raise DataError(
                    f"{csv_path}: line {line}, column 'label': label {label!r} is not one of "
                    f"the classes ({', '.join(given)})"
                )
            if file.is_relative_to(self.root):
                sid = file.relative_to(self.root).as_posix()
            elif file.is_relative_to(csv_dir):
                sid = file.relative_to(csv_dir).as_posix()
            else:
                sid = rel.replace("\\", "/")
            raw.append((sid, file, label, {c: values[c] for c in group_cols}))
        labels_found = sorted({r[2] for r in raw if r[2]})
        if given is not None:
            self.classes = given
        elif labels_found:
            self.classes = labels_found
        else:
            self.classes = None
        self.group_names = group_cols
        for sid, file, label, groups in raw:
            index = self.classes.index(label) if label and self.classes is not None else None
            self._items.append((sid, file, index, groups))

    # -- Dataset ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def _open(self, file: Path) -> Any:
        from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

        try:
            im = Image.open(file)
            width, height = im.size
            if width * height > self.options.max_pixels:  # a decompression bomb is refused unread
                raise DataError(
                    f"{file}: image is {width}x{height} pixels, over the limit of {self.options.max_pixels:,} "
                    "(max_pixels); refused before decoding"
                )
            if width < 2 or height < 2:
                raise DataError(f"{file}: image is {width}x{height} pixels, too small to audit")
            # strict even when another library (WeasyPrint does, on import) let PIL accept truncated files
            strict, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
            try:
                im.load()
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = strict
            transposed = ImageOps.exif_transpose(im)
            return transposed if transposed is not None else im
        except DataError:
            raise
        except Image.DecompressionBombError as exc:
            raise DataError(f"{file}: refused as a decompression bomb: {exc}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot read image {file}: {first}") from None
        except Exception as exc:  # any other decoder failure names the file too
            raise DataError(f"cannot read image {file}: {type(exc).__name__}: {exc}") from None

    def _header(self, file: Path) -> tuple[str, tuple[int, int]]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as im:
                return im.mode, im.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {file}: {exc}") from None

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        if index < 0:
            index += len(self._items)
        if not 0 <= index < len(self._items):
            raise IndexError(f"sample index out of range (the data set has {len(self._items)})")
        sid, file, label, groups = self._items[index]
        im = self._open(file)
        self._read_modes[index] = im.mode
        arr = _to_rgb_array(im)
        if self.options.size is not None:
            arr = _resize(arr, self.options.size)
        else:
            if self._expected_size is None:
                first = self._items[0][1]
                self._expected_size = (arr.shape[1], arr.shape[0]) if index == 0 else self._header(first)[1]
            w, h = self._expected_size
            if arr.shape[:2] != (h, w):
                raise DataError(
                    f"{file}: image is {arr.shape[1]}x{arr.shape[0]} but {self._items[0][1].name} "
                    f"is {w}x{h}; set the 'size' option to resize every image"
                )
        image = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
        return Sample(id=sid, image=image, label=label, groups=dict(groups))

    def files(self) -> list[Path]:
        out = [item[1] for item in self._items]
        if self.metadata_path is not None:
            out.append(self.metadata_path)
        return out

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            manifest = sorted((sid, _sha256(file)) for sid, file, _, _ in self._items)
            payload = {
                "manifest": manifest,
                "metadata": _sha256(self.metadata_path) if self.metadata_path is not None else None,
                "options": self.options.model_dump(exclude={"path", "metadata"}),
            }
            self._fingerprint = hashlib.sha256(
                json.dumps(payload, sort_keys=True).encode()
            ).hexdigest()
        return self._fingerprint

    def source_modes(self) -> dict[str, int]:
        """How many of the images read so far had each PIL mode (each was converted to RGB)."""
        return dict(sorted(Counter(self._read_modes.values()).items()))

    def describe(self) -> dict[str, Any]:
        modes = self.source_modes()
        return {
            "source": str(self.root),
            "metadata": str(self.metadata_path) if self.metadata_path is not None else None,
            "layout": self.layout,
            "n": len(self),
            "n_samples": len(self),
            "n_unlabelled": sum(1 for item in self._items if item[2] is None),
            "classes": list(self.classes) if self.classes is not None else None,
            "group_columns": list(self.group_names),
            "size": self.options.size,
            "source_modes": modes,
            "conversions": {mode: count for mode, count in modes.items() if mode != "RGB"},
        }


class ImageFolderPlugin(DatasetPlugin):
    name = "image-folder"
    description = (
        "Images from a folder: class sub-folders, or a flat folder with a metadata CSV "
        "(path,label and group columns)."
    )
    Options = ImageFolderOptions

    def load(self, context: LoadContext) -> Dataset:
        return ImageFolderDataset(self.options, context.base_dir)

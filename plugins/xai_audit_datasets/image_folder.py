"""image-folder: images on disk, labelled by class sub-folder or by a metadata CSV.

Three layouts:

* class sub-folders: ``path/<class>/**/<image>``; the label is the folder name.
* a flat folder plus a metadata CSV with a column ``path`` (relative to the
  CSV's folder or to ``path``), an optional ``label`` (left out, or empty,
  means unlabelled) and any extra columns, which become group attributes.
* a flat folder of images and no CSV: unlabelled images without groups (no
  ``label`` column to fake).

Images are read lazily, in any mode, and converted to RGB float32 in [0, 1]
(transparent images are composited over white; 16-bit images keep their
precision). Every problem is a :class:`~xai_audit.errors.DataError` whose one
line names the file (and, for the CSV, its line and column).

Hostile folders: every image must lie inside ``path`` (a CSV path such as
``../../elsewhere/x.png``, an absolute one elsewhere, or a symbolic link that
leads out is refused, naming the CSV line or the link) unless ``allow_outside:
true``. A broken symbolic link (dangling, or a loop), and a named pipe, socket or
device named like an image (never opened), are bad samples like an unreadable
image: each stops the audit naming it, or with ``on_bad_sample: skip`` is listed
as skipped. A file name that is not UTF-8 is read; its id shows the
odd bytes escaped (``bad\\xff.png``). Without ``size``, every image must have
the size of the first one that reads (a broken or one-pixel image does not set it).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import Field

from xai_audit.api import DataError, Dataset, DatasetPlugin, LoadContext, Options, Sample, shown_path

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
    allow_outside: bool = Field(
        False, description="read images that lie outside 'path' (CSV paths such as ../x.png, symbolic links out)"
    )


def _real(path: Path) -> Path:
    """``path`` with every symbolic link followed (never raises: a loop is left as it is)."""
    return Path(os.path.realpath(path))


def _broken_link(path: Path) -> str | None:
    """Why the symbolic link ``path`` cannot be followed (dangling, a loop), or None if it can."""
    try:
        os.stat(path)
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{shown_path(path)}: a symbolic link loop (following it never reaches a file)"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"{shown_path(path)}: a dangling symbolic link (its target {shown_path(target)} does not exist)"
        return f"{shown_path(path)}: cannot follow the symbolic link: {exc.strerror or exc}"


def _not_a_file(path: Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder (it is never opened: a named
    pipe with no writer would block the read for ever), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{shown_path(path)}: {kind}, not an image file"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:  # gone or unreadable since the listing: it cannot be read as a sample either
        return f"unreadable: {exc.strerror or exc}"
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
        given_root = root if root.is_absolute() else base / root
        self.root = _real(given_root)
        if not self.root.is_dir():
            if given_root.is_symlink() and _broken_link(given_root):
                raise DataError(f"image folder {_broken_link(given_root)}")
            if self.root.exists():
                raise DataError(f"image folder {shown_path(self.root)}: it is a file, not a folder of images")
            raise DataError(f"image folder not found: {shown_path(self.root)}")
        self.metadata_path: Path | None = None
        self._extensions = {e.lower() if e.startswith(".") else "." + e.lower() for e in options.extensions}
        #: (id, file, label, groups) per sample
        self._items: list[tuple[str, Path, int | None, dict[str, str]]] = []
        #: sample index -> why it cannot be read (a broken link, a link out of the folder), found when listing
        self._problems: dict[int, str] = {}
        if options.metadata is not None:
            meta = Path(options.metadata).expanduser()
            given_meta = meta if meta.is_absolute() else base / meta
            self.metadata_path = _real(given_meta)
            if not self.metadata_path.is_file():
                if given_meta.is_symlink() and _broken_link(given_meta):
                    raise DataError(f"metadata file {_broken_link(given_meta)}")
                if self.metadata_path.is_dir():
                    raise DataError(f"metadata file {shown_path(self.metadata_path)}: it is a folder, not a CSV file")
                raise DataError(f"metadata file not found: {shown_path(self.metadata_path)}")
            self.layout = "metadata-csv"
            self._read_csv()
        else:
            self.layout = "class-folders"
            self._scan_folders()
        if not self._items:
            raise DataError(
                f"no images found in {shown_path(self.metadata_path or self.root)}"
                + ("" if self.metadata_path else f" (extensions: {', '.join(sorted(self._extensions))})")
            )
        #: without ``size``: the first sample that reads, and its (width, height); every image must match it
        self._reference: tuple[str, tuple[int, int]] | None = None
        self._fingerprint: str | None = None
        self._read_modes: dict[int, str] = {}  # sample index -> PIL mode, as each is read

    # -- listing ---------------------------------------------------------------

    def _is_image_name(self, name: str) -> bool:
        return Path(name).suffix.lower() in self._extensions and not name.startswith(".")

    def _is_image(self, path: Path) -> bool:
        return path.is_file() and self._is_image_name(path.name)

    def _could_be_ours(self, name: str) -> bool:
        """Whether a broken link named ``name`` may have been an image or a folder (a ``notes.txt`` is not)."""
        return not name.startswith(".") and (self._is_image_name(name) or not Path(name).suffix)

    def _outside(self, real: Path) -> bool:
        return not self.options.allow_outside and not real.is_relative_to(self.root)

    def _listing(self, folder: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as entries:
                return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"{shown_path(folder)}: cannot list the folder: {exc.strerror or exc}") from None

    def _link_problem(self, path: Path, ancestors: frozenset[Path]) -> str | None:
        """Why the symbolic link ``path`` may not be followed: broken, out of the folder, or back up to a parent."""
        broken = _broken_link(path)
        if broken is not None:
            return broken
        real = _real(path)
        if self._outside(real):
            return (f"{shown_path(path)}: a symbolic link to {shown_path(real)}, outside the data folder {shown_path(self.root)} "
                    "(set the data set's allow_outside: true to read it)")
        if real.is_dir() and real in ancestors:
            return f"{shown_path(path)}: a symbolic link loop (it leads back to {shown_path(real)}, a folder it is in)"
        return None

    def _walk(self, folder: Path, ancestors: frozenset[Path]) -> Iterator[tuple[Path, str | None]]:
        """Images under ``folder`` (depth first, in name order, hidden names left out), each with None,
        and each entry that cannot be read with why (a broken link, one that leads out or loops)."""
        for entry in self._listing(folder):
            path = folder / entry.name
            if entry.is_symlink():
                problem = self._link_problem(path, ancestors)
                if problem is not None:
                    if self._could_be_ours(entry.name) or _real(path).is_dir():
                        yield path, problem
                    continue
            if entry.is_dir():
                yield from self._walk(path, ancestors | {_real(path)})
            elif self._is_image_name(entry.name):  # a named pipe or a device named like an image: a bad sample
                yield path, None if entry.is_file() else _not_a_file(path)

    def _scan_folders(self) -> None:
        folders: list[Path] = []
        broken: list[tuple[Path, str]] = []
        root_only = frozenset({self.root})
        for entry in self._listing(self.root):
            path = self.root / entry.name
            if entry.is_symlink():
                problem = self._link_problem(path, root_only)
                if problem is not None:
                    if self._could_be_ours(entry.name) or _real(path).is_dir():
                        broken.append((path, problem))
                    continue
            if entry.is_dir():
                folders.append(path)
        if not folders:
            loose = [self.root / e.name for e in self._listing(self.root) if self._is_image(self.root / e.name)]
            if loose or any(self._is_image_name(path.name) for path, _ in broken):
                self._flat()  # a flat folder without a CSV: unlabelled images
                return
            if broken:
                raise DataError(f"no images found in {shown_path(self.root)}; {broken[0][1]}")
            raise DataError(
                f"no images found in {shown_path(self.root)} (extensions: {', '.join(sorted(self._extensions))})"
            )
        names = [shown_path(p.name) for p in folders]
        if self.options.classes is not None:
            self.classes = list(self.options.classes)
            for folder, name in zip(folders, names):
                if name not in self.classes:
                    raise DataError(
                        f"{shown_path(folder)}: folder '{name}' is not one of the classes "
                        f"({', '.join(self.classes)})"
                    )
        else:
            self.classes = names
        self.group_names = []
        for folder, name in zip(folders, names):
            label = self.classes.index(name)
            for file, problem in self._walk(folder, root_only | {_real(folder)}):
                if problem is not None:
                    self._problems[len(self._items)] = problem
                rel = shown_path(file.relative_to(self.root).as_posix())
                self._items.append((rel, file, label, {}))
        for path, problem in broken:  # a broken link where a class folder would be: no label
            self._problems[len(self._items)] = problem
            self._items.append((shown_path(path.name), path, None, {}))

    def _flat(self) -> None:
        """Images straight in ``path`` and no metadata CSV: unlabelled, no groups (ids are the file names)."""
        self.layout = "flat-unlabelled"
        self.classes = list(self.options.classes) if self.options.classes is not None else None
        self.group_names = []
        for file, problem in self._walk(self.root, frozenset({self.root})):  # broken links too, as bad samples
            if problem is not None:
                self._problems[len(self._items)] = problem
            self._items.append((shown_path(file.relative_to(self.root).as_posix()), file, None, {}))

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
        if "path" not in header:  # 'label' may be left out: the images are then unlabelled
            raise DataError(
                f"{csv_path}: line 1: missing column 'path' (found: {', '.join(header) or 'none'}); "
                "the columns are path, an optional label, and any group columns"
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
            found = [_real(c) for c in candidates if c.is_file()]
            inside = [f for f in found if not self._outside(f)]
            if not inside:
                where = f"{csv_path}: line {line}, column 'path'"
                if found:
                    raise DataError(
                        f"{where}: {rel} leads outside the data folder {self.root} (to {found[0]}); "
                        "set the data set's allow_outside: true to read images from elsewhere"
                    )
                broken = next((_broken_link(c) for c in candidates if c.is_symlink() and _broken_link(c)), None)
                if broken is not None:
                    raise DataError(f"{where}: {broken}")
                odd = next((_not_a_file(c) or f"{shown_path(c)}: a folder, not an image file" for c in candidates
                            if c.exists() and not c.is_file()), None)
                if odd is not None:
                    raise DataError(f"{where}: {odd}")
                looked = " or ".join(dict.fromkeys(str(c) for c in candidates))
                raise DataError(f"{where}: file not found: {looked}")
            file = inside[0]
            if file in seen:
                raise DataError(
                    f"{csv_path}: line {line}, column 'path': {rel} is listed twice "
                    f"(also on line {seen[file]})"
                )
            seen[file] = line
            label = values.get("label", "")
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
            raw.append((shown_path(sid), file, label, {c: values[c] for c in group_cols}))
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
                    f"{shown_path(file)}: image is {width}x{height} pixels, over the limit of {self.options.max_pixels:,} "
                    "(max_pixels); refused before decoding"
                )
            if width < 2 or height < 2:
                raise DataError(f"{shown_path(file)}: image is {width}x{height} pixels, too small to audit")
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
            raise DataError(shown_path(f"cannot read image {file}: {first}")) from None
        except Exception as exc:  # any other decoder failure names the file too
            raise DataError(shown_path(f"cannot read image {file}: {type(exc).__name__}: {exc}")) from None

    def _reference_size(self, index: int, size: tuple[int, int]) -> tuple[str, tuple[int, int]]:
        """The id and (width, height) of the first sample, in listing order, that reads (``index``, of
        ``size``, reads): the same whichever sample is read first, and never a broken or one-pixel image."""
        if self._reference is None:
            reference = (self._items[index][0], size)
            for j in range(index):
                if j in self._problems:
                    continue
                try:
                    im = self._open(self._items[j][1])
                except DataError:
                    continue
                reference = (self._items[j][0], im.size)
                break
            self._reference = reference
        return self._reference

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        if index < 0:
            index += len(self._items)
        if not 0 <= index < len(self._items):
            raise IndexError(f"sample index out of range (the data set has {len(self._items)})")
        sid, file, label, groups = self._items[index]
        if index in self._problems:
            raise DataError(self._problems[index])
        im = self._open(file)
        self._read_modes[index] = im.mode
        arr = _to_rgb_array(im)
        if self.options.size is not None:
            arr = _resize(arr, self.options.size)
        else:
            first, (w, h) = self._reference_size(index, (arr.shape[1], arr.shape[0]))
            if arr.shape[:2] != (h, w):
                raise DataError(
                    f"{shown_path(file)}: image is {arr.shape[1]}x{arr.shape[0]} but {first} "
                    f"is {w}x{h}; set the 'size' option to resize every image"
                )
        image = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
        return Sample(id=sid, image=image, label=label, groups=dict(groups))

    def files(self) -> list[Path]:
        out = [item[1] for i, item in enumerate(self._items) if i not in self._problems]
        if self.metadata_path is not None:
            out.append(self.metadata_path)
        return out

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            manifest = sorted(
                (sid, "unreadable" if i in self._problems else _sha256(file))
                for i, (sid, file, _, _) in enumerate(self._items)
            )
            payload = {
                "manifest": manifest,
                "metadata": _sha256(self.metadata_path) if self.metadata_path is not None else None,
                # allow_outside changes which files may be listed, not what a listed one holds
                "options": self.options.model_dump(exclude={"path", "metadata", "allow_outside"}),
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
            "source": shown_path(self.root),
            "metadata": shown_path(self.metadata_path) if self.metadata_path is not None else None,
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

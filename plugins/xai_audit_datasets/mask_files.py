"""mask-files: region masks stored as image files beside the images, one folder per region.

    regions: {source: mask-files, path: masks}

The layout, for an image whose sample id is ``happy/001.jpg`` (image-folder ids are the image's path inside
the data folder)::

    masks/                     # 'path', relative to the plan's folder
      eyes/happy/001.png       # <path>/<region>/<the id without its extension>.png
      mouth/happy/001.png
      nose/happy/001.png
      ...

A region is a sub-folder of ``path`` (or the ``regions`` option names them); a mask is any image the size of its
photo (another size is resized to it, nearest neighbour): a pixel brighter than half white is in the region.
Region names are the audit's (eyes, brows, nose, mouth, hair, skin, background; ``lower_face`` is cut from them at
the nose by the hypotheses). ``validate`` checks, before the run, that every audited image has a mask in every
region a hypothesis needs, and names the first missing file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
from pydantic import Field

from xai_audit.api import DataError, LoadContext, Options, RegionSource, RegionSourcePlugin, shown_path


class MaskFilesOptions(Options):
    path: str = Field(..., description="folder of masks: <path>/<region>/<image id without extension>.png "
                                       "(relative to the plan's folder)")
    regions: list[str] | None = Field(None, min_length=1, description="region folders to read (default: every one)")
    extension: str = Field(".png", description="the masks' file extension")


def mask_name(sample_id: str, extension: str) -> PurePosixPath:
    """Where, inside a region's folder, the mask of ``sample_id`` is: the id without its extension + ``extension``."""
    path = PurePosixPath(str(sample_id).replace("\\", "/"))
    return path.with_name(path.stem + extension) if path.suffix else path.with_name(path.name + extension)


class MaskFilesPlugin(RegionSourcePlugin):
    name = "mask-files"
    description = "Region masks stored as files: <path>/<region>/<image id without extension>.png."
    Options = MaskFilesOptions

    def load(self, context: LoadContext) -> RegionSource:
        opts: MaskFilesOptions = self.options
        root = Path(opts.path).expanduser()
        root = (root if root.is_absolute() else Path(context.base_dir) / root).resolve()
        if not root.is_dir():
            raise DataError(f"regions.path: mask folder not found: {shown_path(root)}")
        if opts.regions is not None:
            names = list(dict.fromkeys(opts.regions))
            absent = [n for n in names if not (root / n).is_dir()]
            if absent:
                raise DataError(f"regions.regions: {shown_path(root)} has no folder {absent[0]!r} "
                                f"(it has {sorted(p.name for p in root.iterdir() if p.is_dir())})")
        else:
            names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not names:
                raise DataError(f"regions.path: {shown_path(root)} has no region folders (eyes/, mouth/, ...): "
                                "masks go in <path>/<region>/<image id without extension>.png")
        extension = opts.extension if opts.extension.startswith(".") else "." + opts.extension
        return MaskFiles(root, names, extension)


class MaskFiles(RegionSource):
    def __init__(self, root: Path, names: list[str], extension: str):
        self.root = root
        self._names = names
        self.extension = extension
        self._fingerprint: str | None = None

    def file(self, sample_id: str, region: str) -> Path:
        return self.root / region / mask_name(sample_id, self.extension)

    def names(self) -> list[str]:
        return list(self._names)

    def missing(self, ids: Sequence[str], names: Sequence[str]) -> str | None:
        lacking = [(i, n) for n in names if n in self._names for i in ids if not self.file(i, n).is_file()]
        if not lacking:
            return None
        sample_id, region = lacking[0]
        return (f"{len(lacking)} mask file(s) missing, the first {shown_path(self.file(sample_id, region))} "
                f"(region {region!r} of image {sample_id!r}; layout: <path>/<region>/<image id without extension>"
                f"{self.extension})")

    def regions(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        raise DataError("mask-files finds each image's masks by its sample id; the host calls regions_for")

    def regions_for(self, images: np.ndarray, ids: Sequence[str]) -> list[dict[str, np.ndarray]]:
        shape = images.shape[-2:]
        return [{n: self._read(self.file(i, n), shape) for n in self._names} for i in ids]

    def _read(self, path: Path, shape: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        if not path.is_file():
            raise DataError(f"mask file not found: {shown_path(path)}")
        try:
            with Image.open(path) as im:
                im = im.convert("L")
                if (im.height, im.width) != tuple(shape):
                    im = im.resize((shape[1], shape[0]), Image.NEAREST)
                return np.asarray(im) > 127
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read mask {shown_path(path)}: {exc}") from None

    def _files(self) -> list[Path]:
        return sorted(p for n in self._names for p in (self.root / n).rglob(f"*{self.extension}") if p.is_file())

    def files(self) -> list[Path]:
        return self._files()

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(repr((self._names, self.extension)).encode())
            for path in self._files():
                h.update(path.relative_to(self.root).as_posix().encode())
                h.update(hashlib.sha256(path.read_bytes()).digest())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {
            "source": shown_path(self.root),
            "layout": f"<path>/<region>/<image id without extension>{self.extension}",
            "regions": list(self._names),
        }

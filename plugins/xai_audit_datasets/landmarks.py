"""landmarks: eyes, brows, nose, mouth and face masks from 68 facial landmarks, offline.

    regions: {source: landmarks}            # pip install xai-audit[landmarks]

The landmarks come from dlib's 68-point shape predictor, whose weights ship inside a package
(``face-recognition-models``, read from its install folder: nothing is downloaded at run time), on the face
found by dlib's HOG face detector (built into dlib, no weights file). An image in which no face is found is
taken to be a face crop, and the landmarks are fitted to the whole image (``face: whole-image`` always does
that; the count of each is in the provenance). The points become masks: each eye and the mouth are the
polygons of their outlines, the brows lines as thick as a tenth of the face's height, the nose the hull of its
points, and ``skin`` the face outline (jaw and brows, raised to the forehead); ``lower_face`` is cut from
them at the nose by the hypotheses.

The model's licence: dlib's 68-point predictor was trained on the iBUG 300-W data set, whose terms exclude
commercial use; check them before an audit of a commercial product relies on these masks.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from xai_audit.api import DataError, LoadContext, Options, RegionSource, RegionSourcePlugin

MISSING = ("regions: source 'landmarks' needs dlib and its landmark model, which are not installed: "
           "pip install 'xai-audit[landmarks]' (dlib-bin and face-recognition-models, about 100 MB)")
#: the regions every image gets
NAMES = ["brows", "eyes", "mouth", "nose", "skin"]
#: 68-point indices (iBUG 300-W numbering, from 0)
JAW, RIGHT_BROW, LEFT_BROW = range(17), range(17, 22), range(22, 27)
NOSE, RIGHT_EYE, LEFT_EYE, MOUTH = range(27, 36), range(36, 42), range(42, 48), range(48, 60)


class LandmarksOptions(Options):
    face: Literal["detect", "whole-image"] = Field(
        "detect", description="detect: dlib's face detector, the whole image where it finds no face; "
        "whole-image: every image is a face crop")
    upsample: int = Field(1, ge=0, le=3, description="times the detector doubles the image to find small faces")


def predictor_file() -> Path:
    """The 68-point model inside the face-recognition-models package (found without importing it: its
    ``__init__`` needs ``pkg_resources``, gone from recent setuptools)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        raise DataError(MISSING) from None
    spec = importlib.util.find_spec("face_recognition_models")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "models" / "shape_predictor_68_face_landmarks.dat"
        if path.is_file():
            return path
    raise DataError(MISSING)


class LandmarksPlugin(RegionSourcePlugin):
    name = "landmarks"
    description = "Eyes, brows, nose, mouth and face masks from dlib's 68 facial landmarks (offline; [landmarks] extra)."
    Options = LandmarksOptions

    def load(self, context: LoadContext) -> RegionSource:
        path = predictor_file()  # the one-line error when the extra is not installed
        import dlib

        return Landmarks(dlib, dlib.shape_predictor(str(path)), path, self.options)


class Landmarks(RegionSource):
    def __init__(self, dlib: Any, predictor: Any, path: Path, options: LandmarksOptions):
        self.dlib = dlib
        self.predictor = predictor
        self.path = path
        self.options = options
        self.detector = dlib.get_frontal_face_detector() if options.face == "detect" else None
        self.counts = {"face detected": 0, "whole image": 0}
        self._fingerprint: str | None = None

    def names(self) -> list[str]:
        return list(NAMES)

    def points(self, image: np.ndarray) -> np.ndarray:
        """The 68 (x, y) landmarks of a display image (3, H, W)."""
        pixels = np.ascontiguousarray((np.clip(image.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8))
        height, width = pixels.shape[:2]
        box = None
        if self.detector is not None:
            faces = list(self.detector(pixels, self.options.upsample))
            if faces:
                box = max(faces, key=lambda r: r.width() * r.height())
        self.counts["face detected" if box is not None else "whole image"] += 1
        if box is None:
            box = self.dlib.rectangle(0, 0, width - 1, height - 1)
        shape = self.predictor(pixels, box)
        return np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], np.float64)

    def regions(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [masks_from_points(self.points(image), image.shape[-2:]) for image in images]

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(self.options.model_dump_json().encode())
            with open(self.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def files(self) -> list[Path]:
        return [self.path]

    def describe(self) -> dict[str, Any]:
        return {
            "source": "dlib 68-point shape predictor (face-recognition-models)",
            "face": self.options.face,
            "regions": list(NAMES),
            "images": {k: v for k, v in self.counts.items() if v},
        }


def masks_from_points(points: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Masks of the image size ``shape`` (H, W) from 68 landmarks (x, y)."""
    from PIL import Image, ImageDraw

    height, width = shape
    face_height = max(points[:, 1].max() - points[:, 1].min(), 1.0)
    thick = max(1, int(round(face_height / 10)))

    def draw(how) -> np.ndarray:
        canvas = Image.new("L", (width, height), 0)
        how(ImageDraw.Draw(canvas))
        return np.asarray(canvas) > 0

    def poly(indices) -> list[tuple[float, float]]:
        return [tuple(points[k]) for k in indices]

    def hull(indices) -> list[tuple[float, float]]:
        from scipy.spatial import ConvexHull, QhullError

        chosen = points[list(indices)]
        try:
            return [tuple(chosen[k]) for k in ConvexHull(chosen).vertices]
        except (QhullError, ValueError):  # points on a line
            return [tuple(p) for p in chosen]

    forehead = [(x, y - face_height / 5) for x, y in poly(reversed(range(17, 27)))]
    return {
        "eyes": draw(lambda d: (d.polygon(poly(RIGHT_EYE), fill=1, outline=1),
                                d.polygon(poly(LEFT_EYE), fill=1, outline=1))),
        "brows": draw(lambda d: (d.line(poly(RIGHT_BROW), fill=1, width=thick),
                                 d.line(poly(LEFT_BROW), fill=1, width=thick))),
        "nose": draw(lambda d: d.polygon(hull(NOSE), fill=1, outline=1)),
        "mouth": draw(lambda d: d.polygon(poly(MOUTH), fill=1, outline=1)),
        "skin": draw(lambda d: d.polygon(poly(JAW) + forehead, fill=1, outline=1)),
    }

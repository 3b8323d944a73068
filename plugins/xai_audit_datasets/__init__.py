"""Built-in data sets: ``synthetic-faces``, ``image-folder``, ``fer2013-csv`` and ``digits``; and the region
sources ``mask-files`` (masks stored as files beside the images) and ``landmarks`` (dlib's 68 facial landmarks,
the ``[landmarks]`` extra).

Registered through the ``xai_audit`` entry point exactly as a third-party
plugin would be.
"""

from __future__ import annotations

from xai_audit.api import DatasetPlugin, RegionSourcePlugin, hookimpl
from xai_audit_datasets.digits import DigitsPlugin
from xai_audit_datasets.fer2013 import Fer2013Plugin
from xai_audit_datasets.image_folder import ImageFolderDataset, ImageFolderOptions, ImageFolderPlugin
from xai_audit_datasets.landmarks import LandmarksPlugin
from xai_audit_datasets.mask_files import MaskFiles, MaskFilesPlugin
from xai_audit_datasets.synthetic_faces import (
    CLASSES,
    GENERATOR_VERSION,
    REGIONS,
    TONES,
    SyntheticFacesDataset,
    SyntheticFacesOptions,
    SyntheticFacesPlugin,
    load_arrays,
)

__all__ = [
    "CLASSES",
    "GENERATOR_VERSION",
    "REGIONS",
    "TONES",
    "ImageFolderDataset",
    "ImageFolderOptions",
    "ImageFolderPlugin",
    "MaskFiles",
    "MaskFilesPlugin",
    "SyntheticFacesDataset",
    "SyntheticFacesOptions",
    "SyntheticFacesPlugin",
    "load_arrays",
    "register_datasets",
    "register_region_sources",
]


@hookimpl
def register_datasets() -> list[type[DatasetPlugin]]:
    return [SyntheticFacesPlugin, ImageFolderPlugin, Fer2013Plugin, DigitsPlugin]


@hookimpl
def register_region_sources() -> list[type[RegionSourcePlugin]]:
    return [MaskFilesPlugin, LandmarksPlugin]

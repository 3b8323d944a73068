"""Built-in data sets: ``synthetic-faces``, ``image-folder``, ``fer2013-csv`` and ``digits``.

Registered through the ``xai_audit`` entry point exactly as a third-party
plugin would be.
"""

from __future__ import annotations

from xai_audit.api import DatasetPlugin, hookimpl
from xai_audit_datasets.digits import DigitsPlugin
from xai_audit_datasets.fer2013 import Fer2013Plugin
from xai_audit_datasets.image_folder import ImageFolderDataset, ImageFolderOptions, ImageFolderPlugin
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
    "SyntheticFacesDataset",
    "SyntheticFacesOptions",
    "SyntheticFacesPlugin",
    "load_arrays",
    "register_datasets",
]


@hookimpl
def register_datasets() -> list[type[DatasetPlugin]]:
    return [SyntheticFacesPlugin, ImageFolderPlugin, Fer2013Plugin, DigitsPlugin]

"""Hostile image folders: what a file system can hold besides images, written on demand.

Each writer adds one case to a class folder (or a data folder) and returns the name it
shows in messages. Listed with what each gets in docs/bad-input.md ("Folders and paths").
"""

from __future__ import annotations

import os
from pathlib import Path

from corpus.images import _rgb

#: a file name that is not UTF-8 (byte 0xff), and how xai-audit shows it
NON_UTF8_NAME = b"bad\xff.png"
NON_UTF8_SHOWN = "bad\\xff.png"


def non_utf8_image(folder: Path, seed: int = 9) -> Path:
    """A valid image whose file name is not UTF-8."""
    path = os.path.join(os.fsencode(folder), NON_UTF8_NAME)
    _rgb(seed).save(os.fsdecode(path), format="PNG")
    return Path(os.fsdecode(path))


def non_utf8_broken(folder: Path) -> Path:
    """An empty file (not an image) whose file name is not UTF-8."""
    path = os.path.join(os.fsencode(folder), NON_UTF8_NAME)
    with open(path, "wb"):
        pass
    return Path(os.fsdecode(path))


def dangling_link(folder: Path, name: str = "dangling.png") -> Path:
    """A symbolic link to a file that does not exist."""
    os.symlink("nowhere.png", folder / name)
    return folder / name


def self_loop(folder: Path, name: str = "loop.png") -> Path:
    """A symbolic link to itself: following it never ends."""
    os.symlink(name, folder / name)
    return folder / name


def folder_loop(folder: Path, name: str = "again") -> Path:
    """A symbolic link to the folder above: walking into it would list the same images for ever."""
    os.symlink("..", folder / name)
    return folder / name


def link_outside(folder: Path, target: Path, name: str = "link.png") -> Path:
    """A symbolic link inside the data folder to an image outside it."""
    os.symlink(target, folder / name)
    return folder / name


def named_pipe(folder: Path, name: str = "pipe.png") -> Path:
    """A named pipe (FIFO) with an image's name: opening it would wait for a writer for ever."""
    os.mkfifo(folder / name)
    return folder / name

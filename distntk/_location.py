"""Store locations as distntk spells them, without importing any storage library (the CLI's start stays light)."""

from __future__ import annotations

import os

__all__ = ["location"]


def location(path: str | os.PathLike) -> str:
    """A store location as distntk uses it: ``~`` expanded and ``file://`` dropped for local paths; URLs as given."""
    text = str(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return text if "://" in text else os.path.expanduser(text)

"""Readers of the raw data sets, by data set name.

``get_source(name, src)`` returns a :class:`~igan.data.sources.base.Source`; see that class for the
reader API (splits, class names, the per-sample index and lazy records).
"""
from __future__ import annotations

from igan.data.sources.base import Entry, Record, Source, SourceError

_MODULES = {
    "digits": ("igan.data.sources.digits", "DigitsSource"),
    "mnist": ("igan.data.sources.mnist", "MnistSource"),
    "cifar10": ("igan.data.sources.cifar", "Cifar10Source"),
    "svhn": ("igan.data.sources.svhn", "SvhnSource"),
    "imagenet": ("igan.data.sources.imagenet", "ImageNetSource"),
}
SOURCE_NAMES = tuple(_MODULES)

__all__ = ["Entry", "Record", "Source", "SourceError", "SOURCE_NAMES", "get_source", "source_class"]


def source_class(name: str) -> type[Source]:
    """The Source subclass reading data set ``name``; SourceError naming the known sets otherwise."""
    if name not in _MODULES:
        raise SourceError(f"unknown data set '{name}'; allowed: {', '.join(SOURCE_NAMES)}")
    import importlib

    module, cls = _MODULES[name]
    return getattr(importlib.import_module(module), cls)


def get_source(name: str, src: str | None = None, **options) -> Source:
    """The reader of data set ``name`` over the raw files at ``src`` (a folder or archive; unused
    by ``digits``). Raises SourceError for an unknown name or a missing/unrecognised ``src``."""
    cls = source_class(name)
    if cls.needs_src and not src:
        raise SourceError(f"{name} needs --src PATH (the folder or archive of the raw files)")
    return cls(src, **options)

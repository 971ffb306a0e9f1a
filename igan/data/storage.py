"""Folders on local disk or in object stores (``s3://``, ``gs://``, ``file://``, ``memory://``, ...).

One small API over fsspec. When the fsspec driver of a cloud scheme (s3fs, gcsfs) is not installed,
pyarrow's own filesystem for the URI is used through fsspec's Arrow wrapper, so ``s3://`` and
``gs://`` work with pyarrow alone. Local paths and ``file://`` URIs use the local filesystem, whose
rename is atomic.
"""
from __future__ import annotations

import os
import posixpath
from typing import IO

import fsspec


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` strings (object stores, ``file://``, ``memory://``)."""
    return "://" in str(path)


def resolve(url: str):
    """``(filesystem, path)``: an fsspec filesystem and the path inside it for ``url``."""
    url = str(url)
    if not is_uri(url):
        return fsspec.filesystem("file"), os.path.abspath(url)
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError:  # e.g. s3fs/gcsfs missing: pyarrow speaks s3 and gs natively
        import pyarrow.fs as pafs
        from fsspec.implementations.arrow import ArrowFSWrapper

        afs, path = pafs.FileSystem.from_uri(url)
        fs = ArrowFSWrapper(afs)
    return fs, path


def join(url: str, *names: str) -> str:
    """``url`` with ``names`` appended by ``/`` (local paths by ``os.path.join``)."""
    if not is_uri(url):
        return os.path.join(url, *names)
    return posixpath.join(str(url).rstrip("/"), *names)


def open_read(url: str) -> IO[bytes]:
    """A binary stream reading ``url``: a local path, a URI of any fsspec/pyarrow filesystem, or
    ``pipe:COMMAND`` (the command's stdout, as in WebDataset)."""
    url = str(url)
    if url.startswith("pipe:"):
        import webdataset as wds

        return wds.gopen(url, "rb")
    if not is_uri(url):
        return open(url, "rb")
    fs, path = resolve(url)
    return fs.open(path, "rb")


class Folder:
    """A folder at ``url`` (local path or URI) with the few operations shard writing needs.
    Picklable (re-resolved from the URL), so it can travel into Ray tasks."""

    def __init__(self, url: str):
        self.url = str(url).rstrip("/") if is_uri(url) else os.path.abspath(str(url))
        self.fs, self.path = resolve(self.url)

    def __reduce__(self):
        return (Folder, (self.url,))

    def __repr__(self) -> str:
        return f"Folder({self.url!r})"

    def sub(self, name: str) -> "Folder":
        """The child folder ``name``."""
        return Folder(join(self.url, name))

    def url_of(self, name: str) -> str:
        """The URL (or local path) of the entry ``name`` in this folder."""
        return join(self.url, name)

    def _p(self, name: str) -> str:
        return posixpath.join(self.path, name) if is_uri(self.url) else os.path.join(self.path, name)

    def makedirs(self) -> None:
        """Create the folder (no-op on object stores without directories)."""
        self.fs.makedirs(self.path, exist_ok=True)

    def exists(self, name: str = "") -> bool:
        """True when the entry ``name`` (or the folder itself) exists."""
        return bool(self.fs.exists(self._p(name) if name else self.path))

    def is_dir(self) -> bool:
        """True when this folder exists as a directory."""
        try:
            return bool(self.fs.isdir(self.path))
        except (FileNotFoundError, OSError):
            return False

    def list(self) -> list[str]:
        """Names (not paths) of the entries directly in the folder, sorted; [] if it is missing."""
        try:
            entries = self.fs.ls(self.path, detail=False)
        except (FileNotFoundError, OSError):
            return []
        return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)

    def size(self, name: str) -> int:
        """Size in bytes of the file ``name``."""
        return int(self.fs.size(self._p(name)))

    def open_write(self, name: str) -> IO[bytes]:
        """A new binary stream writing the file ``name`` (replaced if present)."""
        return self.fs.open(self._p(name), "wb")

    def open_read(self, name: str) -> IO[bytes]:
        """A binary stream reading the file ``name``."""
        return self.fs.open(self._p(name), "rb")

    def read_bytes(self, name: str) -> bytes:
        """The whole content of the file ``name``."""
        with self.open_read(name) as f:
            return f.read()

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` inside the folder, replacing ``dst`` (atomic on local disks;
        copy-then-delete on object stores, where the final object appears whole or not at all)."""
        if not is_uri(self.url):
            os.replace(self._p(src), self._p(dst))
        else:
            self.fs.mv(self._p(src), self._p(dst))

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        """Write ``data`` to ``name`` through a temporary name and a rename."""
        tmp = f"{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        with self.open_write(tmp) as f:
            f.write(data)
        self.rename(tmp, name)

    def remove(self, name: str, recursive: bool = False) -> None:
        """Delete the entry ``name``; missing entries are ignored."""
        try:
            self.fs.rm(self._p(name), recursive=recursive)
        except FileNotFoundError:
            pass

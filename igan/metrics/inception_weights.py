"""Finding, fetching and reading the Inception-v3 weight files (the network is
:mod:`igan.metrics.inception_net`). igan never downloads them on its own: the user provides the file.

The file is found at the ``weights`` argument, else ``$IGAN_INCEPTION_WEIGHTS``, else
``$IGAN_CACHE/inception/<file>`` (default ``~/.cache/igan/inception/<file>``), else torch's hub
checkpoint folder; otherwise :class:`InceptionWeightsNotFound` says where to put it. Each of these
may be a file or a folder holding ``<file>``, and a local path or a URI that fsspec reads
(``s3://``, ``gs://``, ``memory://``, ...; see :mod:`igan.data.storage`). A remote file is fetched
once into the local cache, ``<local cache>/inception/fetched/<16 hex of the URI's sha256>/<name>``
(``<local cache>`` is ``$IGAN_CACHE`` when that is a local path, else ``~/.cache/igan``), through a
temporary file and a rename, so workers sharing a node never read half a file; later loads read the
copy without contacting the store. ``file://`` URIs are read in place. Files are loaded with
``torch.load(weights_only=True)``; one that is not a state dict of the network raises
:class:`InceptionWeightsInvalid` naming it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import torch

ENV_WEIGHTS = "IGAN_INCEPTION_WEIGHTS"
ENV_CACHE = "IGAN_CACHE"
WEIGHT_FILES = {"torchvision": "inception_v3_google-0cc3c7bd.pth",
                "tf2015": "pt_inception-2015-12-05-6726825d.pth"}
#: Classes of each kind's network: the rows of its ``fc.weight``, which tell the two files apart.
NUM_CLASSES = {"torchvision": 1000, "tf2015": 1008}


class InceptionWeightsNotFound(FileNotFoundError):
    """No Inception-v3 weight file (or a URI that cannot be fetched); the one-line message names
    the file, the places tried, the cache folder and the env var."""


class InceptionWeightsInvalid(ValueError):
    """The weight file is not a state dict of the requested Inception-v3; the one-line message
    names the file and what is wrong."""


class _Located(NamedTuple):
    """A weight file found: ``path`` on local disk, ``source`` as the user named it (path or URI),
    ``fetched`` when ``path`` is this node's cached copy of a remote ``source``."""
    path: Path
    source: str
    fetched: bool


def local_cache_dir() -> Path:
    """This node's Inception folder: ``$IGAN_CACHE/inception`` for a local ``$IGAN_CACHE``, else
    ``~/.cache/igan/inception`` (also where remote files are fetched to when ``$IGAN_CACHE`` is a URI)."""
    from igan.data.storage import is_uri

    root = os.environ.get(ENV_CACHE)
    if not root or is_uri(root):
        root = Path.home() / ".cache" / "igan"
    return Path(os.path.expanduser(root)) / "inception"


def _cache_location() -> str:
    """Where users put the weight files by default: ``$IGAN_CACHE/inception`` (local path or URI)."""
    from igan.data.storage import is_uri, join

    root = os.environ.get(ENV_CACHE)
    return join(root, "inception") if root and is_uri(root) else str(local_cache_dir())


def _candidates(weights: str | os.PathLike | None, filename: str) -> list[tuple[str, str]]:
    """``(location, what it is)`` pairs to try, in order: the given file or folder (path or URI),
    else ``filename`` in the default folders."""
    from igan.data.storage import join

    given = weights if weights is not None else os.environ.get(ENV_WEIGHTS)
    if given:
        source = "weights argument" if weights is not None else f"${ENV_WEIGHTS}"
        return [(os.path.expanduser(str(given)), source)]
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    return [(join(_cache_location(), filename), "default location"), (join(hub, filename), "torch hub cache")]


def _locate(location: str, filename: str) -> _Located | None:
    """The weight file at ``location`` (the file, or ``filename`` inside a folder) on local disk,
    fetching a remote one into the cache unless a copy is there already; None when it does not exist."""
    from fsspec.implementations.local import LocalFileSystem

    from igan.data.storage import is_uri, join, resolve

    if not is_uri(location):
        path = Path(location)
        path = path / filename if path.is_dir() else path
        return _Located(path, str(path), False) if path.is_file() else None
    try:
        fs, inner = resolve(location)
        if isinstance(fs, LocalFileSystem):  # file://: this node's disk, read in place
            return _locate(inner, filename)
        for uri in (location, join(location, filename)):  # fetched before: no need to reach the store
            if fetched_path(uri).is_file():
                return _Located(fetched_path(uri), uri, True)
        if _is_dir(fs, inner):
            location = join(location, filename)
        return _Located(fetch(location), location, True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ImportError) as exc:  # credentials, network, unknown scheme
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InceptionWeightsNotFound(f"cannot fetch the Inception-v3 weights from {location}: {reason}") from None


def _is_dir(fs, path: str) -> bool:
    try:
        return bool(fs.isdir(path))
    except (OSError, ValueError):
        return False


def fetched_path(uri: str) -> Path:
    """Where :func:`fetch` keeps this node's copy of ``uri``: keyed by the whole URI, so two
    stores' files of the same name never shadow each other."""
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return local_cache_dir() / "fetched" / key / (uri.rstrip("/").rsplit("/", 1)[-1] or "weights.pth")


def fetch(uri: str) -> Path:
    """The local copy of the remote file ``uri``, downloaded on first use. The download goes to a
    temporary name in the same folder and is renamed into place, so concurrent workers of a node
    see the whole file or none. FileNotFoundError when ``uri`` does not exist."""
    from igan.data.storage import open_read

    dest = fetched_path(uri)
    if dest.is_file():
        return dest
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    with open_read(uri) as src:  # opened first: a missing object leaves no folder behind
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return dest


def _find(weights: str | os.PathLike | None, kind: str) -> _Located:
    """The weight file of ``kind`` (see :func:`resolve_weights`) with where it came from."""
    if kind not in WEIGHT_FILES:
        raise ValueError(f"kind must be one of {', '.join(WEIGHT_FILES)}; got {kind!r}")
    filename = WEIGHT_FILES[kind]
    candidates = _candidates(weights, filename)
    for location, _ in candidates:
        found = _locate(location, filename)
        if found is not None:
            return found
    tried = "; ".join(f"{loc} ({what})" for loc, what in candidates)
    raise InceptionWeightsNotFound(
        f"Inception-v3 weights for kind '{kind}' not found (tried: {tried}); igan never downloads them: "
        f"put '{filename}' in {_cache_location()}/ or set {ENV_WEIGHTS} to its path or URI (s3://, gs://, "
        f"file://, any fsspec URL; a URI is fetched once into {local_cache_dir()}/fetched/)")


def resolve_weights(weights: str | os.PathLike | None, kind: str) -> Path:
    """The local weight file for ``kind``: ``weights``, else ``$IGAN_INCEPTION_WEIGHTS``, else the
    default locations (see the module doc); a remote file is fetched into the cache first. A folder
    stands for the kind's file name inside it. Raises :class:`InceptionWeightsNotFound` naming what
    was tried and where to put it."""
    return _find(weights, kind).path


def _read_state(found: _Located) -> dict:
    """The tensors of the file (``state_dict`` unwrapped, the auxiliary head dropped), loaded with
    ``weights_only=True``; :class:`InceptionWeightsInvalid` for anything that is not a state dict."""
    try:
        state = torch.load(found.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors alike mean "not a state dict file"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InceptionWeightsInvalid(f"{_named(found)} is not a PyTorch state dict file ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InceptionWeightsInvalid(f"{_named(found)} holds a {type(state).__name__}, not a state dict of tensors")
    return {k: v for k, v in state.items() if not str(k).startswith("AuxLogits.")}


def _named(found: _Located) -> str:
    return f"{found.source} (cached as {found.path})" if found.fetched else str(found.path)


def held_classes(path: str | os.PathLike) -> int | None:
    """The rows of ``fc.weight`` in the weight file at ``path`` (1008: the 2015 graph's port, 1000:
    torchvision's network), or None when it is no readable state dict holding one. The file is
    memory-mapped when its format allows, so only that tensor is read."""
    for mmap in (True, False):  # files in the legacy (non-zip) format cannot be memory-mapped
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:  # noqa: BLE001 - any failure means "not a file of either kind"
            continue
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        fc = state.get("fc.weight") if isinstance(state, dict) else None
        return int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.ndim == 2 else None
    return None


def has_weights(kind: str, weights: str | os.PathLike | None = None) -> bool:
    """Whether the usual search (:func:`resolve_weights`: ``weights``, ``$IGAN_INCEPTION_WEIGHTS``,
    the cache, torch's hub folder) finds a file that holds the ``kind`` network. A file of the
    other kind, a missing or unfetchable one all answer False; only the full load
    (:func:`igan.metrics.inception_net.check_weights`) checks every tensor."""
    try:
        found = _find(weights, kind)
    except InceptionWeightsNotFound:
        return False
    return held_classes(found.path) == NUM_CLASSES[kind]

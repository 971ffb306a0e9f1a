"""Inception-v3 scorer: class probabilities (Inception score) and 2048-d pool features (FID).

Two networks, both built locally; weights come from a file the user provides (a local path, or a
URI of the user's own store, fetched once), never from a download igan starts on its own:

* ``kind="torchvision"``: torchvision's Inception-v3 (1000 classes), file
  ``inception_v3_google-0cc3c7bd.pth`` (torchvision's state dict; its ``AuxLogits`` entries are
  ignored).
* ``kind="tf2015"``: the 2015-12-05 TensorFlow graph the paper's scores use (1008 classes), as
  ported to PyTorch for FID (file ``pt_inception-2015-12-05-6726825d.pth``). Its blocks differ from
  torchvision's: the average pools of the A, C and first E block exclude padding, and the last E
  block max-pools. Probabilities use the final layer without its bias, as the authors' score did.

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
import torch.nn.functional as F
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

ENV_WEIGHTS = "IGAN_INCEPTION_WEIGHTS"
ENV_CACHE = "IGAN_CACHE"
WEIGHT_FILES = {"torchvision": "inception_v3_google-0cc3c7bd.pth",
                "tf2015": "pt_inception-2015-12-05-6726825d.pth"}
NUM_CLASSES = {"torchvision": 1000, "tf2015": 1008}
INPUT_SIZE = 299
FEATURE_DIM = 2048


class InceptionWeightsNotFound(FileNotFoundError):
    """No Inception-v3 weight file (or a URI that cannot be fetched); the one-line message names
    the file, the places tried, the cache folder and the env var."""


class InceptionWeightsInvalid(ValueError):
    """The weight file is not a state dict of the requested Inception-v3; the one-line message
    names the file and what is wrong."""


# -- the 2015-12-05 graph's block variants ---------------------------------------------------
class FIDInceptionA(InceptionA):
    """InceptionA whose pool branch averages over valid pixels only (``count_include_pad=False``)."""

    def _forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return [b1, b5, b3, bp]


class FIDInceptionC(InceptionC):
    """InceptionC whose pool branch averages over valid pixels only."""

    def _forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return [b1, b7, bd, bp]


class FIDInceptionE(InceptionE):
    """InceptionE with the 2015 graph's pool branch: ``pool="avg"`` averages over valid pixels
    only (block ``Mixed_7b``), ``pool="max"`` max-pools (block ``Mixed_7c``)."""

    def __init__(self, in_channels: int, pool: str = "avg"):
        super().__init__(in_channels)
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be avg or max; got {pool!r}")
        self.pool = pool

    def _forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "avg":
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        else:
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        return [b1, b3, bd, self.branch_pool(pooled)]


def build_inception(kind: str) -> Inception3:
    """An untrained Inception-v3 of ``kind`` (``torchvision`` or ``tf2015``) without the auxiliary
    head and without input transform (it expects inputs in [-1, 1], ``[N, 3, 299, 299]``)."""
    if kind not in NUM_CLASSES:
        raise ValueError(f"kind must be one of {', '.join(NUM_CLASSES)}; got {kind!r}")
    net = Inception3(num_classes=NUM_CLASSES[kind], aux_logits=False, transform_input=False,
                     init_weights=False)
    if kind == "tf2015":
        net.Mixed_5b, net.Mixed_5c = FIDInceptionA(192, 32), FIDInceptionA(256, 64)
        net.Mixed_5d = FIDInceptionA(288, 64)
        net.Mixed_6b = FIDInceptionC(768, 128)
        net.Mixed_6c, net.Mixed_6d = FIDInceptionC(768, 160), FIDInceptionC(768, 160)
        net.Mixed_6e = FIDInceptionC(768, 192)
        net.Mixed_7b, net.Mixed_7c = FIDInceptionE(1280, "avg"), FIDInceptionE(2048, "max")
    return net.eval()


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


def _check_state(state: dict, net: Inception3, found: _Located, kind: str) -> None:
    """:class:`InceptionWeightsInvalid` (one line) unless ``state`` fits ``net`` key for key and
    shape for shape."""
    fc = state.get("fc.weight")
    if fc is not None and fc.ndim == 2 and fc.shape[0] != NUM_CLASSES[kind]:
        other = {v: k for k, v in NUM_CLASSES.items()}.get(fc.shape[0])
        hint = f"; that is kind='{other}'" if other else ""
        raise InceptionWeightsInvalid(f"{_named(found)} holds a {fc.shape[0]}-class network, not an Inception-v3 "
                                      f"of kind '{kind}' ({NUM_CLASSES[kind]} classes){hint}")
    expected = net.state_dict()
    # files saved before BatchNorm counted its batches lack these; load_state_dict fills them in
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {what} (e.g. '{keys[0]}')" for keys, what in
                 ((missing, "missing keys"), (unexpected, "unexpected keys"), (wrong, "wrong shapes")) if keys]
        raise InceptionWeightsInvalid(f"{_named(found)} is not a state dict of an Inception-v3 of kind '{kind}': "
                                      + ", ".join(parts))


def _load(found: _Located, kind: str) -> Inception3:
    """:func:`build_inception` with the state dict of ``found``; a wrong fetched copy is deleted,
    so the next try fetches the file again."""
    net = build_inception(kind)
    try:
        state = _read_state(found)
        _check_state(state, net, found, kind)
    except InceptionWeightsInvalid:
        if found.fetched:
            found.path.unlink(missing_ok=True)
        raise
    net.load_state_dict(state)
    return net


def load_inception(weights: str | os.PathLike | None = None, kind: str = "torchvision") -> Inception3:
    """:func:`build_inception` with the state dict from the resolved file (see module doc).
    Raises :class:`InceptionWeightsNotFound` or :class:`InceptionWeightsInvalid`, one line each."""
    return _load(_find(weights, kind), kind)


def check_weights(weights: str | os.PathLike | None = None, kind: str = "torchvision") -> Path:
    """The local weight file of ``kind``, after loading it into the network once: a missing or
    wrong file raises here (:class:`InceptionWeightsNotFound`, :class:`InceptionWeightsInvalid`)
    rather than in a worker after the job started."""
    found = _find(weights, kind)
    _load(found, kind)
    return found.path


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``x [N, C, H, W]`` to ``[N, C, size, size]`` as TensorFlow 1's
    ``ResizeBilinear`` (``align_corners=False``, no half-pixel centers), the op inside the 2015
    graph: output pixel ``i`` samples input coordinate ``i * H / size``, clamped at the last row."""
    for dim in (2, 3):
        n_in = x.shape[dim]
        src = torch.arange(size, device=x.device, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        w = (src - lo).to(x.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        w = w.view(shape)
        x = x.index_select(dim, lo) * (1 - w) + x.index_select(dim, hi) * w
    return x


class InceptionScorer:
    """Inception-v3 class probabilities and pool features for images, computed in batches.

    ``images``: ``uint8 [N, C, H, W]`` (0..255; scaled ``(x-128)/128`` for ``tf2015``,
    ``x/127.5-1`` for ``torchvision``) or float ``[N, C, H, W]`` already in ``[-1, 1]`` (the
    ``symmetric`` range; convert other ranges first). ``C`` is 3, or 1 (repeated to RGB). Images are
    resized bilinearly to 299x299: TensorFlow-1 style (:func:`resize_bilinear_tf1`) for ``tf2015``,
    ``F.interpolate(..., align_corners=False)`` for ``torchvision``. numpy arrays are accepted.
    Outputs are float32 CPU tensors.
    """

    def __init__(self, weights: str | os.PathLike | None = None, kind: str = "torchvision",
                 device: str | torch.device | None = None, batch_size: int = 50):
        self.kind = kind
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = int(batch_size)
        self.net = load_inception(weights, kind).to(self.device)

    @property
    def num_classes(self) -> int:
        """1000 (torchvision) or 1008 (tf2015)."""
        return NUM_CLASSES[self.kind]

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != 4 or batch.shape[1] not in (1, 3):
            raise ValueError(f"images must be [N, 1 or 3, H, W]; got shape {tuple(batch.shape)}")
        if batch.dtype == torch.uint8:
            x = batch.to(self.device, torch.float32)
            x = (x - 128.0) / 128.0 if self.kind == "tf2015" else x / 127.5 - 1.0
        else:
            x = batch.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] == (INPUT_SIZE, INPUT_SIZE):
            return x
        if self.kind == "tf2015":
            return resize_bilinear_tf1(x, INPUT_SIZE)
        return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(net, name)(x)
        return torch.flatten(net.avgpool(x), 1)

    def _logits(self, pool: torch.Tensor) -> torch.Tensor:
        if self.kind == "tf2015":  # the authors' score: pool_3 times the softmax weights, no bias
            return pool @ self.net.fc.weight.t()
        return self.net.fc(pool)

    def _run(self, images, head: bool) -> torch.Tensor:
        x = torch.as_tensor(images)
        out = []
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                pool = self._pool(self._prepare(x[start:start + self.batch_size]))
                out.append((torch.softmax(self._logits(pool).double(), 1).float() if head else pool).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.num_classes if head else FEATURE_DIM)

    def probabilities(self, images) -> torch.Tensor:
        """Softmax class probabilities ``[N, 1000]`` (torchvision) or ``[N, 1008]`` (tf2015)."""
        return self._run(images, head=True)

    def features(self, images) -> torch.Tensor:
        """Global-average-pool features ``[N, 2048]`` (the FID features)."""
        return self._run(images, head=False)

    def probabilities_and_features(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs from one pass: ``([N, K], [N, 2048])``."""
        feats = self.features(images)
        with torch.no_grad():
            logits = self._logits(feats.to(self.device))
        return torch.softmax(logits.double(), 1).float().cpu(), feats

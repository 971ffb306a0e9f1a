"""Streaming reader of the shards that ``igan shard`` writes (local folders or URIs).

A shard root ``ROOT`` holds ``ROOT/<split>/manifest.json`` and the split's WebDataset tars. The
reader yields ``(image, label)``: ``image`` a ``uint8 [C, H, W]`` tensor (0..255), or ``float32
[C, H, W]`` in the model's range when ``pixel_range`` is given (see :mod:`igan.data.pixels`), and
``label`` an ``int64`` scalar tensor.

Exactly once per epoch. The epoch's shard order is a permutation drawn from ``(seed, epoch)``. The
consumers are the ``world_size`` Ray Train workers times the ``num_workers`` DataLoader workers of
each; consumer ``c = rank * num_workers + worker_id`` of ``C`` reads shards ``order[c::C]``
(``split_by="shard"``), or, when there are fewer shards than consumers, every shard keeping the
samples whose position in the epoch's stream is ``c`` modulo ``C`` (``split_by="sample"``). Either
way every sample is yielded once per epoch by exactly one consumer. Each consumer then shuffles
through a buffer of ``shuffle_buffer`` samples seeded by ``(seed, epoch, c)``.

Batches. With ``batch_size`` set, each consumer yields whole batches ``(images [B, C, H, W],
labels [B])`` of its own stream (the last one short unless ``drop_last``; images in
``channels_last`` memory, see :mod:`igan.data.decoding`), decoded by
:class:`~igan.data.decoding.BatchDecoder` on ``decode_threads`` threads, ``prefetch`` batches
ahead of the one being consumed. Use them with ``DataLoader(batch_size=None)``, or with no
DataLoader at all: threads in the training process decode faster than worker processes on
small machines (no shared-memory hand-over per batch), and worker processes remain available
(``num_workers``) where the reading itself needs more cores.

Verification. Every shard is read whole, so it is checked against its manifest entry before any of
its samples is used (:func:`iter_tar` with a :class:`ShardSpec`): its sha256 (unless
``verify=False``: the only check that costs), its sample count, every label in
``0..num_classes-1`` and an image in every sample; and, whatever the spec, member names that stay
inside the shard (no absolute paths, no ``..``) and each key once. The hash of a local file is
not recomputed while the file provably has not changed since this process verified it: same
device, inode, size, mtime and ctime before and after the read (any write or rename changes the
ctime, which no user can set back); object-store shards are hashed on every read. So each epoch
after the first costs no hashing on local disks (:func:`forget_verified` undoes this). Readers of a whole split also
check that no key is in two shards (:class:`KeyLedger`). Anything else raises
:class:`~igan.data.manifest.ShardDataError` naming the shard: a permanent data fault, which the
training driver reports once instead of restarting workers on it. Counts that match the manifest
are what keeps data-parallel ranks in step: each rank's step count is computed from them in advance.

This module is plain PyTorch: the caller passes its Ray Train rank and world size.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from igan.data.carve import EncodedSplit, image_bytes
from igan.data.holdout import Picked
from igan.data.decoding import BatchDecoder, decode_image
from igan.data.manifest import ShardDataError, split_manifest
from igan.data.pixels import to_model_range
from igan.data.storage import is_uri, open_read

SPLIT_MODES = ("auto", "shard", "sample")


@dataclass(frozen=True)
class ShardSpec:
    """What a manifest promises about one shard: its ``url``, ``num_samples``, ``sha256`` (None:
    not checked) and the label range ``0..num_classes-1``."""
    url: str
    num_samples: int
    sha256: str | None
    num_classes: int


def shard_specs(folder, manifest: dict, verify: bool = True) -> list[ShardSpec]:
    """The :class:`ShardSpec` of every shard of a split folder's ``manifest``, in manifest order;
    ``verify=False`` leaves out the sha256 (the counts, labels and names are still checked)."""
    n = int(manifest["num_classes"])
    return [ShardSpec(folder.url_of(s["name"]), int(s["num_samples"]), s["sha256"] if verify else None, n)
            for s in manifest["shards"]]


def iter_tar(url: str, select: str | None = None, expect: ShardSpec | None = None) -> Iterator[dict]:
    """Samples of one shard as WebDataset dicts ``{"__key__": str, "png"|"jpg": bytes, "cls":
    bytes}`` in file order. ``select``: keep only members with that extension (e.g. ``"cls"``).
    Plain ustar members (what ``igan shard`` writes) are parsed directly; a shard using other tar
    features (long-name or pax headers, ...) is read with WebDataset's tarfile-based expander.
    The shard is read and checked whole before its first sample is yielded: ShardDataError for a
    cut-short tar, a member name outside the shard (absolute or with ``..``), a key seen twice and,
    with ``expect``, a shard that differs from it (see the module doc)."""
    raw, identity = _read_whole(url)
    want = expect.sha256 if expect is not None else None
    known = want is not None and identity is not None and _VERIFIED.get((url, want)) == identity
    digest = _Sha256(raw) if want is not None and not known else None
    try:
        samples = _parse_tar(raw, url, select)
    except ShardDataError:
        if digest is not None:  # a wrong hash says more than the broken tar it explains
            digest.check(expect.sha256, url)
        raise
    if digest is not None:
        digest.check(expect.sha256, url)
        # a file changed within the last second may change again inside the same coarse clock tick
        # (same ctime): trust only identities older than that
        if identity is not None and time.time_ns() - identity[-1] > 1_000_000_000:
            _VERIFIED[(url, want)] = identity
    if expect is not None:
        _check_samples(samples, expect, url, images=select is None)
    yield from samples


# (local path, sha256) -> identity of the file when bytes read from it hashed to that sha256
_VERIFIED: dict[tuple[str, str], tuple] = {}


def forget_verified() -> None:
    """Forget which local shards this process has verified: the next read of each hashes it again."""
    _VERIFIED.clear()


def _identity(fd: int) -> tuple:
    """``(device, inode, size, mtime_ns, ctime_ns)`` of the open file ``fd``."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _read_whole(url: str) -> tuple[bytes, tuple | None]:
    """``(bytes, identity)`` of the shard at ``url``: identity (device, inode, size, mtime,
    ctime) for a local file that did not change while it was read, else None. ShardDataError when
    it does not exist (a manifest that lists a missing shard does not heal on a retry; other I/O
    errors may, and pass through)."""
    try:
        if is_uri(url) or url.startswith("pipe:"):
            with open_read(url) as stream:
                return stream.read(), None
        with open(url, "rb") as f:
            before = _identity(f.fileno())
            raw = f.read()
            after = _identity(f.fileno())
        return raw, (after if after == before else None)
    except FileNotFoundError:
        raise ShardDataError(f"{url}: shard listed in the manifest does not exist") from None


class _Sha256:
    """The sha256 of ``raw``, computed on a thread of its own while the caller parses the tar:
    hashlib releases the GIL, so on a core the decoders leave free the check costs no time on
    the consuming thread (a thread per shard: forked DataLoader workers inherit no pool)."""

    def __init__(self, raw: bytes):
        self.size, self._hex = len(raw), None
        self._thread = threading.Thread(target=self._run, args=(raw,), name="igan-sha256", daemon=True)
        self._thread.start()

    def _run(self, raw: bytes) -> None:
        self._hex = hashlib.sha256(raw).hexdigest()

    def check(self, want: str, url: str) -> None:
        """ShardDataError when the digest is not the manifest's ``want``."""
        self._thread.join()
        if self._hex != want:
            got = self._hex or "?"
            raise ShardDataError(f"{url}: sha256 {got[:16]}... does not match the manifest's {want[:16]}... "
                                 f"({self.size} bytes; the shard was replaced, altered or cut short)")


def _parse_tar(raw: bytes, url: str, select: str | None) -> list[dict]:
    """The shard's samples (see :func:`iter_tar`), every key once; ShardDataError for anything
    that does not parse."""
    import tarfile

    try:
        return _parse_members(raw, url, select)
    except ShardDataError:
        raise
    except (ValueError, EOFError, tarfile.TarError) as exc:  # e.g. a member name that is not UTF-8
        raise ShardDataError(f"{url}: unreadable tar ({type(exc).__name__}: {exc})"[:300]) from None


def _parse_members(raw: bytes, url: str, select: str | None) -> list[dict]:
    """The samples of the tar ``raw``: ustar parsed directly, anything else through WebDataset."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def keep(fname: str) -> bool:
        return select is None or fname.endswith("." + select)

    members = _ustar_members(raw, url, keep)
    if members is not None:
        return list(_group_members(members, url))
    _check_foreign_names(raw, url)
    samples = list(group_by_keys(tar_file_expander([{"url": url, "stream": io.BytesIO(raw)}], select_files=keep)))
    _check_unique([s["__key__"] for s in samples], url)
    return samples


def _check_samples(samples: list[dict], expect: ShardSpec, url: str, images: bool) -> None:
    """ShardDataError unless there are ``expect.num_samples`` samples, each with a label in
    ``0..num_classes-1`` and (``images``) an encoded image."""
    if len(samples) != expect.num_samples:
        raise ShardDataError(f"{url}: holds {len(samples)} samples, the manifest says {expect.num_samples}")
    top = expect.num_classes
    for s in samples:
        raw = s.get("cls")
        try:
            label = int(raw)
        except (TypeError, ValueError):
            what = "no label (.cls member)" if raw is None else f"label {bytes(raw[:20])!r}, not an integer"
            raise ShardDataError(f"{url}: sample {s['__key__']} has {what}") from None
        if not 0 <= label < top:
            raise ShardDataError(f"{url}: sample {s['__key__']} has label {label}, outside 0..{top - 1} "
                                 f"(the manifest's num_classes is {top})")
        if images and "png" not in s and "jpg" not in s and "jpeg" not in s:
            raise ShardDataError(f"{url}: sample {s['__key__']} has no png/jpg image")


def _name_problem(name: str) -> str | None:
    """Why a tar member name would leave the shard's folder, or None."""
    if name.startswith("/"):
        return "is an absolute path"
    if ".." in name.split("/"):
        return "climbs out with '..'"
    return None


def _check_foreign_names(raw: bytes, url: str) -> None:
    """ShardDataError when a member of a tar read through tarfile has a name outside the shard."""
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            names = tar.getnames()
    except tarfile.TarError as exc:
        raise ShardDataError(f"{url}: not a readable tar ({exc})") from None
    for name in names:
        why = _name_problem(name)
        if why is not None:
            raise ShardDataError(f"{url}: member name {name!r} {why}"[:300])


def _check_unique(keys: list[str], url: str) -> None:
    """ShardDataError naming the first key of ``keys`` that comes twice."""
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ShardDataError(f"{url}: key {key!r} appears twice"[:300])
        seen.add(key)


def _group_members(members: list[tuple[str, bytes]], url: str) -> Iterator[dict]:
    """Consecutive ``(name, data)`` members sharing a key as one sample dict, WebDataset's rule
    (key: the path up to the first dot of the file name; the rest, lower-cased, is the field)
    without its per-member regular expression: reading is per-sample overhead of every epoch.
    ShardDataError when a key comes back after another one (WebDataset would yield it twice)."""
    sample: dict | None = None
    seen: set[str] = set()
    for name, data in members:
        base = name.rfind("/") + 1
        dot = name.find(".", base)
        if dot <= base:
            continue  # no extension or an empty base: not a sample member (as WebDataset)
        key, field = name[:dot], name[dot + 1:].lower()
        if sample is None or sample["__key__"] != key:
            if sample is not None:
                yield sample
            if key in seen:
                raise ShardDataError(f"{url}: key {key!r} appears twice"[:300])
            seen.add(key)
            sample = {"__key__": key, "__url__": url}
        if field in sample:
            raise ShardDataError(f"{url}: duplicate member {name}"[:300])
        sample[field] = data
    if sample is not None:
        yield sample


def _ustar_members(raw: bytes, url: str, keep) -> list[tuple[str, bytes]] | None:
    """``[(name, data)]`` of the regular files of an uncompressed ustar archive, or None when the
    archive uses anything else (then the caller falls back to tarfile). ShardDataError for a
    member name outside the shard or a tar cut short."""
    out, pos, end, finished = [], 0, len(raw), False
    view = memoryview(raw)
    while pos + 512 <= end:
        header = raw[pos:pos + 512]
        if header[0] == 0:  # end-of-archive blocks
            finished = True
            break
        kind = header[156:157]
        if kind not in (b"0", b"\0") or header[257:262] != b"ustar":
            return None
        try:
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return None
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8")
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix.decode("utf-8") + "/" + name
        why = _name_problem(name)
        if why is not None:  # never silently dropped: a shard with such a name was not written by igan
            raise ShardDataError(f"{url}: member name {name!r} {why}"[:300])
        start = pos + 512
        if start + size > end:
            raise ShardDataError(f"{url}: truncated tar member {name}")
        if keep(name) and "/." not in "/" + name:
            out.append((name, bytes(view[start:start + size])))
        pos = start + (size + 511) // 512 * 512
    if not finished:
        raise ShardDataError(f"{url}: truncated tar (no end-of-archive block after {len(out)} members)")
    return out


class KeyLedger:
    """Finds a key that is in two shards of a split in one pass, keeping 16 bytes per sample (a
    64-bit hash of the key, its shard and position) rather than the keys: a split of millions of
    samples stays small in every worker. :meth:`check` confirms a hash match on the real keys."""

    def __init__(self):
        self._hashes, self._where = array("q"), array("q")

    def add(self, key: str, shard: int, position: int) -> None:
        """Record sample ``position`` of shard ``shard`` (both 0-based) with its ``key``."""
        self._hashes.append(hash(key))
        self._where.append((shard << 32) | position)

    def check(self, keys_of: Callable[[int], list[str]], url_of: Callable[[int], str]) -> None:
        """ShardDataError naming the key and both shards when a key was added twice. ``keys_of(i)``
        returns shard ``i``'s keys in file order (reread only for hash matches)."""
        if len(self._hashes) < 2:
            return
        h = np.frombuffer(self._hashes, dtype=np.int64)
        order = np.argsort(h, kind="stable")
        for d in np.flatnonzero(h[order[1:]] == h[order[:-1]]):
            (sa, pa), (sb, pb) = (divmod(self._where[int(order[j])], 1 << 32) for j in (d, d + 1))
            key = keys_of(sa)[pa]
            if keys_of(sb)[pb] == key:
                raise ShardDataError(f"key {key!r} is in two shards: {url_of(sa)} and {url_of(sb)}"[:400])


def iter_split(folder, manifest: dict, verify: bool = True, select: str | None = None) -> Iterator[tuple[int, dict]]:
    """Every sample of a split folder as ``(shard index, sample)``, shards in manifest order, each
    checked against its manifest entry (:func:`iter_tar`); after the last one, ShardDataError when
    a key is in two shards."""
    specs = shard_specs(folder, manifest, verify)
    ledger = KeyLedger()
    for index, spec in enumerate(specs):
        for position, sample in enumerate(iter_tar(spec.url, select, expect=spec)):
            ledger.add(sample["__key__"], index, position)
            yield index, sample
    cache: dict[int, list[str]] = {}

    def keys_of(i: int) -> list[str]:
        if i not in cache:
            cache[i] = [s["__key__"] for s in iter_tar(specs[i].url, select="cls")]
        return cache[i]

    ledger.check(keys_of, lambda i: specs[i].url)


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """Indices of the shards in the order read in ``epoch``: a permutation drawn from
    ``(seed, epoch)`` (identity when ``shuffle`` is false)."""
    if not shuffle:
        return list(range(num_shards))
    return [int(i) for i in np.random.default_rng([seed, epoch, 7]).permutation(num_shards)]


class ShardDataset(IterableDataset):
    """An epoch of one split's samples for this consumer (see the module doc for the split rules).

    Args: ``root`` shard root (path or URI); ``split``; ``rank``/``world_size`` of the Ray Train
    worker; ``shuffle`` (shard order and buffer); ``shuffle_buffer`` samples (0: none); ``seed``;
    ``epoch`` (or call :meth:`set_epoch` before each epoch; with ``persistent_workers`` the loader
    keeps the epoch of its first iteration); ``pixel_range`` None for ``uint8`` images, else
    ``unit``/``symmetric``/``authors`` floats; ``split_by`` ``auto``/``shard``/``sample``;
    ``with_keys`` yields ``(key, image, label)`` (samples only). ``batch_size`` yields batches
    ``(images [B, C, H, W], labels int64 [B])`` instead of samples, ``drop_last`` drops a short
    last one, ``decode_threads`` and ``prefetch`` (batches decoding ahead) as in the module doc.
    ``exclude``: keys never yielded (the validation hold-out of a train split), with
    ``excluded_per_shard`` how many of them each shard holds, so counts stay exact; positions for
    ``split_by="sample"`` count only the samples that remain. ``verify``: check each shard's sha256
    against the manifest as it is read (the counts, labels and names are checked either way).
    """

    def __init__(self, root: str, split: str = "train", *, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, shuffle_buffer: int = 2000, seed: int = 0, epoch: int = 0,
                 pixel_range: str | None = None, split_by: str = "auto", with_keys: bool = False,
                 batch_size: int | None = None, drop_last: bool = False, decode_threads: int = 1,
                 prefetch: int = 2, exclude: frozenset[str] = frozenset(),
                 excluded_per_shard: list[int] | None = None, verify: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}; got {rank}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if decode_threads < 1 or prefetch < 0:
            raise ValueError(f"decode_threads must be >= 1 and prefetch >= 0; got {decode_threads}, {prefetch}")
        if split_by not in SPLIT_MODES:
            raise ValueError(f"split_by must be one of {', '.join(SPLIT_MODES)}; got {split_by!r}")
        folder, self.manifest = split_manifest(root, split)
        self.specs = shard_specs(folder, self.manifest, verify)
        self.urls = [spec.url for spec in self.specs]
        # every rank's step count comes from these before a byte is read: iter_tar holds each shard to them
        self.counts = [spec.num_samples for spec in self.specs]
        if excluded_per_shard is not None:
            if len(excluded_per_shard) != len(self.counts) or sum(excluded_per_shard) != len(exclude):
                raise ValueError("excluded_per_shard must give, per shard, how many keys of exclude it holds")
            self.counts = [c - e for c, e in zip(self.counts, excluded_per_shard)]
        elif exclude:
            raise ValueError("exclude needs excluded_per_shard (the per-shard counts of excluded keys)")
        self.exclude = exclude
        self.root, self.split, self.rank, self.world_size = root, split, rank, world_size
        self.shuffle, self.shuffle_buffer, self.seed, self.epoch = shuffle, shuffle_buffer, seed, epoch
        self.pixel_range, self.split_by, self.with_keys = pixel_range, split_by, with_keys
        self.channels = int(self.manifest["channels"])
        self.batch_size, self.drop_last = batch_size, drop_last
        self.decode_threads, self.prefetch = decode_threads, prefetch

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shard order and shuffle seed from the next iteration on."""
        self.epoch = int(epoch)

    def mode(self, num_consumers: int) -> str:
        """``shard`` or ``sample``: how the epoch is split over ``num_consumers``."""
        if self.split_by != "auto":
            return self.split_by
        return "shard" if len(self.urls) >= num_consumers else "sample"

    def plan(self, consumer: int, num_consumers: int) -> tuple[list[int], int, int]:
        """``(shard indices read, keep-modulus, keep-remainder)`` of ``consumer`` this epoch."""
        order = shard_order(len(self.urls), self.seed, self.epoch, self.shuffle)
        if self.mode(num_consumers) == "shard":
            return order[consumer::num_consumers], 1, 0
        return order, num_consumers, consumer

    def num_samples(self, num_workers: int = 0) -> int:
        """Samples this rank (all its DataLoader workers together) yields in the current epoch."""
        workers = max(1, num_workers)
        total = 0
        for w in range(workers):
            c, n = self.rank * workers + w, self.world_size * workers
            shards, mod, rem = self.plan(c, n)
            if mod == 1:
                total += sum(self.counts[i] for i in shards)
            else:
                total += len(range(rem, sum(self.counts), mod))
        return total

    def _consumer(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + wid, self.world_size * workers

    def samples(self) -> Iterator[dict]:
        """This consumer's raw WebDataset samples of the epoch, before shuffling and decoding."""
        c, n = self._consumer()
        shards, mod, rem = self.plan(c, n)
        position = 0
        for i in shards:
            for sample in iter_tar(self.urls[i], expect=self.specs[i]):
                if sample["__key__"] in self.exclude:
                    continue
                if mod == 1 or position % mod == rem:
                    yield sample
                position += 1

    def __iter__(self):
        c, _ = self._consumer()
        rng = np.random.default_rng([self.seed, self.epoch, c, 11])
        stream = self.samples()
        if self.shuffle and self.shuffle_buffer > 1:
            stream = shuffle_buffer(stream, self.shuffle_buffer, rng)
        if self.batch_size is not None:
            yield from self._batches(stream)
            return
        for sample in stream:
            image = decode_image(image_bytes(sample), self.channels)
            if self.pixel_range is not None:
                image = to_model_range(image, self.pixel_range)
            label = torch.tensor(int(sample["cls"]), dtype=torch.int64)
            yield (sample["__key__"], image, label) if self.with_keys else (image, label)

    def _batches(self, stream: Iterator[dict]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        h, w = self.manifest["image_size"]
        decoder = BatchDecoder(self.channels, h, w, self.decode_threads)
        pending: deque = deque()
        try:
            for chunk in _chunks(stream, self.batch_size):
                if self.drop_last and len(chunk) < self.batch_size:
                    break
                handle = decoder.submit([image_bytes(s) for s in chunk], [s["__key__"] for s in chunk])
                pending.append((handle, torch.tensor([int(s["cls"]) for s in chunk], dtype=torch.int64)))
                if len(pending) > self.prefetch:
                    yield self._finish(*pending.popleft())
            while pending:
                yield self._finish(*pending.popleft())
        finally:
            decoder.close()

    def _finish(self, handle, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = BatchDecoder.result(handle)
        if self.pixel_range is not None:
            images = to_model_range(images, self.pixel_range)
        return images, labels


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def shuffle_buffer(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """``items`` in a random order: each output is drawn uniformly from a buffer of ``size`` items,
    refilled from the input; the remainder is flushed in random order. Every item comes out once."""
    buf: list = []
    draws, d = np.empty(0, dtype=np.int64), 0
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        if d == len(draws):  # slots drawn in blocks: one numpy call per 1024 items, not per item
            draws, d = rng.integers(size, size=1024), 0
        j = int(draws[d])
        d += 1
        buf[j], item = item, buf[j]
        yield item
    for j in rng.permutation(len(buf)):
        yield buf[j]


def make_loader(root: str, split: str = "train", *, batch_size: int, rank: int = 0, world_size: int = 1,
                num_workers: int = 0, decode_threads: int = 2, shuffle: bool = True, shuffle_buffer: int = 2000,
                seed: int = 0, epoch: int = 0, pixel_range: str | None = None, split_by: str = "auto",
                drop_last: bool = False, pin_memory: bool = False, verify: bool = True) -> DataLoader:
    """A DataLoader of batches ``(images [B, C, H, W], labels int64 [B])`` over this rank's part of
    the split (a :class:`ShardDataset`, reachable as ``loader.dataset`` for ``set_epoch``).
    Batches are formed and decoded (``decode_threads`` threads each) inside each of
    ``num_workers`` worker processes, or in this process when ``num_workers=0``; the last batch of
    a worker may be short (``drop_last`` drops it). Call ``loader.dataset.set_epoch(e)`` before
    each epoch; ranks may differ by up to one shard in ``split_by="shard"`` mode
    (``loader.dataset.num_samples(num_workers)`` tells each rank its count, e.g. to agree on a
    common number of steps). ``verify``: check each shard's sha256 as it is read (module doc)."""
    ds = ShardDataset(root, split, rank=rank, world_size=world_size, shuffle=shuffle,
                      shuffle_buffer=shuffle_buffer, seed=seed, epoch=epoch, pixel_range=pixel_range,
                      split_by=split_by, batch_size=batch_size, drop_last=drop_last, decode_threads=decode_threads,
                      verify=verify)
    return DataLoader(ds, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False)


def read_encoded(root: str, split: str, pixel_range: str | None = None,
                 keys: set[str] | None = None, verify: bool = True) -> EncodedSplit:
    """The whole split (or only the samples whose key is in ``keys``) as encoded images sorted by
    key, decoded on demand to ``pixel_range`` (None: ``uint8``). Every shard is checked
    (:func:`iter_split`; ``verify``: sha256 too)."""
    folder, manifest = split_manifest(root, split)
    found = [Picked(sample["__key__"], int(sample["cls"]), image_bytes(sample))
             for _, sample in iter_split(folder, manifest, verify)
             if keys is None or sample["__key__"] in keys]
    found.sort(key=lambda p: p.key)
    h, w = manifest["image_size"]
    return EncodedSplit(found, int(manifest["channels"]), h, w, pixel_range)


def read_split(root: str, split: str, pixel_range: str | None = None,
               keys: set[str] | None = None, verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split (or only the samples whose key is in ``keys``) in memory, sorted by key:
    images ``uint8 [N, C, H, W]`` (or float in ``pixel_range``) and labels ``int64 [N]``.
    For small sets (digits, test splits)."""
    return read_encoded(root, split, pixel_range, keys, verify).decode_all()


def read_labels(root: str, split: str, verify: bool = True) -> tuple[list[str], np.ndarray]:
    """Keys (sorted) and their labels ``int64 [N]`` of a split, keeping only the ``.cls`` members
    (every shard is still read and checked whole)."""
    folder, manifest = split_manifest(root, split)
    pairs = [(sample["__key__"], int(sample["cls"]))
             for _, sample in iter_split(folder, manifest, verify, select="cls")]
    pairs.sort()
    return [k for k, _ in pairs], np.array([y for _, y in pairs], dtype=np.int64)


__all__ = ["ShardDataset", "ShardSpec", "KeyLedger", "make_loader", "read_split", "read_encoded", "read_labels",
           "iter_tar", "iter_split", "shard_specs", "forget_verified", "decode_image", "shard_order",
           "shuffle_buffer"]

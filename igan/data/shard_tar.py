"""One tar shard of a split: read whole, parsed and checked against its manifest entry before any
of its samples is used (:func:`iter_tar` with a :class:`ShardSpec`).

The checks: its sha256 (unless ``verify=False``: the only check that costs), its sample count, every
label in ``0..num_classes-1`` and an image in every sample; and, whatever the spec, member names that
stay inside the shard (no absolute paths, no ``..``) and each key once. The hash of a local file is
not recomputed while the file provably has not changed since this process verified it: same
device, inode, size, mtime and ctime before and after the read (any write or rename changes the
ctime, which no user can set back); object-store shards are hashed on every read. So each epoch
after the first costs no hashing on local disks (:func:`forget_verified` undoes this). Anything
else raises :class:`~igan.data.manifest.ShardDataError` naming the shard: a permanent data fault,
which the training driver reports once instead of restarting workers on it. Counts that match the
manifest are what keeps data-parallel ranks in step: each rank's step count is computed from them
in advance.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from igan.data.manifest import ShardDataError
from igan.data.storage import is_uri, open_read


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

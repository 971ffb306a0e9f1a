"""``manifest.json``: what a folder of shards holds (README, "Shard layout").

A shard root is a folder or URI holding one subfolder per split, each with its shards and its
manifest: ``ROOT/<split>/<split>-NNNNNN.tar`` and ``ROOT/<split>/manifest.json``. Fields:
``dataset``, ``split``, ``num_samples``, ``num_classes``, ``classes`` (names in index order),
``image_size`` ``[H, W]``, ``channels``, ``shards`` (each ``name``, ``num_samples``, ``sha256``),
``skipped`` (each ``source`` and ``reason``).

Shard names are plain file names inside the split folder (no ``/``, ``\\``, ``..`` or leading
``.``), so a manifest can never point a reader outside its folder.

:class:`ShardDataError` is what a reader raises when the data contradicts its manifest (or the
manifest itself is wrong, :class:`ManifestError`): a permanent fault of the data that retrying the
job cannot fix, which the training driver reports once instead of restarting the workers.
"""
from __future__ import annotations

import json
import re

from igan.data.storage import Folder

MANIFEST = "manifest.json"
FIELDS = ("dataset", "split", "num_samples", "num_classes", "classes", "image_size", "channels",
          "shards", "skipped")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class ShardDataError(ValueError):
    """Shard data is wrong: a shard differs from its manifest entry (sha256, sample count), holds a
    label outside ``0..num_classes-1``, a member name outside its folder or a key twice, or the
    manifest itself is wrong. Permanent: rereading gives the same answer. The message is one line
    naming the shard (or manifest) and what is wrong."""


class ManifestError(ShardDataError):
    """A manifest is missing, unreadable or inconsistent; the message says which and why."""


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``: ``<split>-NNNNNN.tar``."""
    return f"{split}-{index:06d}.tar"


def check_shard_name(name: str) -> str | None:
    """Why ``name`` is not a plain entry name inside its folder (no separators, not hidden, not
    ``.``/``..``), or None when it is one."""
    if not name or name in (".", ".."):
        return "is empty or a folder reference"
    if "/" in name or "\\" in name or "\0" in name:
        return "has a path separator (it must name a file inside the split folder)"
    if name.startswith("."):
        return "starts with a dot"
    return None


def validate_manifest(m: dict, where: str = "manifest") -> dict:
    """``m`` itself when it has every field with a consistent value; ManifestError otherwise
    (sum of shard counts equals ``num_samples``, ``len(classes) == num_classes``, ...)."""
    if not isinstance(m, dict):
        raise ManifestError(f"{where}: not a JSON object")
    missing = [k for k in FIELDS if k not in m]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")

    def bad(key: str, what: str):
        raise ManifestError(f"{where}: field '{key}' {what}; got {m[key]!r}"[:300])

    for key in ("dataset", "split"):
        if not isinstance(m[key], str) or not m[key]:
            bad(key, "must be a non-empty string")
    for key in ("num_samples", "num_classes", "channels"):
        if not isinstance(m[key], int) or isinstance(m[key], bool) or m[key] < 0:
            bad(key, "must be a non-negative integer")
    if m["channels"] not in (1, 3):
        bad("channels", "must be 1 or 3")
    if not isinstance(m["classes"], list) or len(m["classes"]) != m["num_classes"] \
            or not all(isinstance(c, str) for c in m["classes"]):
        bad("classes", f"must be a list of {m['num_classes']} names")
    size = m["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        bad("image_size", "must be [H, W] with positive integers")
    if not isinstance(m["shards"], list):
        bad("shards", "must be a list")
    total, names = 0, set()
    for s in m["shards"]:
        if not (isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("num_samples"), int)
                and isinstance(s.get("sha256"), str) and _SHA.match(s["sha256"])):
            raise ManifestError(f"{where}: every shard needs name, num_samples and a sha256 hex digest; got {s!r}"[:300])
        why = check_shard_name(s["name"])
        if why is not None:
            raise ManifestError(f"{where}: shard name {s['name']!r} {why}"[:300])
        if s["num_samples"] < 0:
            raise ManifestError(f"{where}: shard {s['name']} has a negative num_samples")
        if s["name"] in names:
            raise ManifestError(f"{where}: shard {s['name']} is listed twice")
        names.add(s["name"])
        total += s["num_samples"]
    if total != m["num_samples"]:
        raise ManifestError(f"{where}: shards hold {total} samples but num_samples is {m['num_samples']}")
    if not isinstance(m["skipped"], list) or not all(
            isinstance(s, dict) and "source" in s and "reason" in s for s in m["skipped"]):
        bad("skipped", "must be a list of {source, reason}")
    return m


def read_manifest(split_dir: str | Folder) -> dict:
    """The validated manifest of the split folder ``split_dir`` (path, URI or Folder)."""
    folder = split_dir if isinstance(split_dir, Folder) else Folder(split_dir)
    where = folder.url_of(MANIFEST)
    try:
        raw = folder.read_bytes(MANIFEST)
    except (FileNotFoundError, OSError):
        raise ManifestError(f"no {MANIFEST} at {where} (not a shard folder, or `igan shard` did not finish)") from None
    try:
        m = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"{where} is not valid JSON: {exc}") from None
    return validate_manifest(m, where)


def write_manifest(split_dir: str | Folder, manifest: dict) -> None:
    """Validate ``manifest`` and write it as ``manifest.json`` (temporary name, then rename)."""
    folder = split_dir if isinstance(split_dir, Folder) else Folder(split_dir)
    validate_manifest(manifest, folder.url_of(MANIFEST))
    ordered = {k: manifest[k] for k in FIELDS}
    folder.write_bytes_atomic(MANIFEST, (json.dumps(ordered, indent=1) + "\n").encode())


def split_manifest(root: str, split: str) -> tuple[Folder, dict]:
    """``(split folder, validated manifest)`` of ``split`` under the shard root ``root``.
    ManifestError naming the splits that exist when ``split`` is not there."""
    root_folder = Folder(root)
    why = check_shard_name(split)
    if why is not None:
        raise ManifestError(f"split name {split!r} {why.split(' (')[0]} (it must name a folder inside {root})")
    folder = root_folder.sub(split)
    if not folder.exists(MANIFEST):
        have = list_splits(root)
        raise ManifestError(f"no split '{split}' under {root_folder.url} (has: {', '.join(have) or 'none'}); "
                            f"run `igan shard` first")
    return folder, read_manifest(folder)


def list_splits(root: str) -> list[str]:
    """Names of the splits under the shard root ``root`` that have a manifest, sorted."""
    root_folder = Folder(root)
    return [name for name in root_folder.list() if root_folder.sub(name).exists(MANIFEST)]

"""Where igan's jobs live and what they record: the storage folder, job names, and the job record
(``igan_job.json`` for a training job, ``igan_tune.json`` for a search) that ``--resume`` reads.

A job lives in ``<storage>/<name>/`` (Ray's run or experiment folder). Its record is written
atomically where the storage allows and never holds credentials (the tracking URI is stored
without them).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from pipelines import defaults
from pipelines.errors import UserError


@dataclass(frozen=True)
class RecordKind:
    """One kind of job record: its file name, what a user calls the job, and the keys (name ->
    type) ``--resume`` needs from it."""
    file: str
    noun: str
    keys: tuple[tuple[str, type], ...]


TRAIN_JOB = RecordKind("igan_job.json", "job", (("name", str), ("config", dict)))
SEARCH_JOB = RecordKind("igan_tune.json", "search",
                        (("name", str), ("parent_run_id", str), ("options", dict), ("config", dict)))


def resolve_storage(storage: str | None, uri_ok: bool = True) -> str:
    """``--storage`` as Ray wants it: a URI unchanged (UserError unless ``uri_ok``), a local path
    made absolute; default :func:`pipelines.defaults.default_storage`."""
    from igan.data.storage import is_uri

    storage = storage or defaults.default_storage()
    if is_uri(storage):
        if not uri_ok:
            raise UserError("igan tune keeps its searches on a local or shared file system path; "
                            f"got the URI {storage}")
        return storage.rstrip("/")
    return os.path.abspath(os.path.expanduser(storage))


def new_job_name(prefix: str) -> str:
    """``<prefix>-<YYYYmmdd-HHMMSS>-<4 hex>``: unique, sortable, readable."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


def parse_record(data: bytes, where: str, keys) -> dict:
    """The JSON object in ``data`` (the file ``where``) holding ``keys`` ((name, type) pairs or a
    dict); UserError naming the file, and the key, when it does not."""
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{where} is corrupt (not JSON: {exc}); repair or delete it") from None
    if not isinstance(record, dict):
        raise UserError(f"{where} is corrupt (a JSON {type(record).__name__}, not an object); repair or delete it")
    for key, kind in (keys.items() if isinstance(keys, dict) else keys):
        if not isinstance(record.get(key), kind):
            raise UserError(f"{where} is corrupt: key '{key}' is missing or not a {kind.__name__}; "
                            "repair or delete it")
    return record


def read_record(storage: str, name: str, kind: RecordKind) -> dict | None:
    """The record of job ``name`` in ``storage``, or None when there is none; UserError naming the
    file when it is not a record of ``kind`` (corrupt JSON, a key missing)."""
    from igan.data.storage import Folder

    folder = Folder(storage).sub(name)
    if not folder.exists(kind.file):
        return None
    return parse_record(folder.read_bytes(kind.file), folder.url_of(kind.file), kind.keys)


def write_record(storage: str, name: str, record: dict, kind: RecordKind) -> None:
    """Write ``record`` as job ``name``'s record (atomically where the storage allows)."""
    from igan.data.storage import Folder

    folder = Folder(storage).sub(name)
    folder.makedirs()
    folder.write_bytes_atomic(kind.file, json.dumps(record, indent=1, default=str).encode())


def latest_record(storage: str, kind: RecordKind) -> dict | None:
    """The most recently created record of ``kind`` in ``storage``, or None."""
    from igan.data.storage import Folder

    root = Folder(storage)
    if not root.is_dir():
        return None
    records = [r for n in root.list() if (r := read_record(storage, n, kind)) is not None]
    return max(records, key=lambda r: r.get("created", 0), default=None)


def job_exists(storage: str, name: str) -> bool:
    """Whether ``<storage>/<name>`` exists (a job of any kind, or anything else in the way)."""
    from igan.data.storage import Folder

    return Folder(storage).exists(name)


def find_record(storage: str, name: str | None, kind: RecordKind) -> dict:
    """The record ``--resume`` continues: job ``name``'s, else the latest; UserError when none."""
    record = read_record(storage, name, kind) if name else latest_record(storage, kind)
    if record is None:
        where = f"{kind.noun} '{name}' in {storage}" if name else f"{kind.noun} in {storage}"
        raise UserError(f"--resume: found no {where} (see --storage and --name)")
    return record

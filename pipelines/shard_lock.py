"""One ``igan shard`` at a time per ``--out``: a lock held for the whole run.

Local folders (plain paths and ``file://``): ``flock`` on ``<out>/.igan-shard.lock``, which the
kernel releases when the process ends, however it ends, so a crash never leaves a stale lock. The
file stays (unlinking a flock file races with a run opening it); it says who holds it. On NFS,
Linux maps ``flock`` to NFS byte-range locks, which hold across clients.

Object stores (``s3://``, ``gs://``, ``memory://`` ...) have no lock primitive that fsspec exposes,
so the lock is a best-effort lock *object* at the same name: a run refuses when the object exists
and was refreshed less than :data:`STALE_AFTER_S` ago; otherwise it writes its own token, waits
:data:`SETTLE_S`, and holds the lock only if its token is still the one there. While held, a
thread rewrites the object every :data:`HEARTBEAT_S`; the object is removed at the end. Limits:
two runs that write within the same ``SETTLE_S`` window on a store without read-after-write
consistency may both proceed; a run that dies holds the lock for up to ``STALE_AFTER_S``; the
freshness test compares the holder's clock with the reader's (keep clocks within a minute).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time

from igan.data.storage import Folder
from pipelines.errors import UserError

LOCK_NAME = ".igan-shard.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 180.0
SETTLE_S = 0.5


def _owner() -> dict:
    """Who takes the lock: host, pid, time and a random token."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "token": os.urandom(8).hex()}


def _describe(owner: dict | None) -> str:
    if not owner:
        return "another igan shard run"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("time", 0)))
    return f"another igan shard run (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, since {since})"


def _local_path(folder: Folder) -> str | None:
    """The local path of ``folder`` when it is on this machine's filesystem, else None."""
    from fsspec.implementations.local import LocalFileSystem

    return folder.path if isinstance(folder.fs, LocalFileSystem) else None


class ShardLock:
    """The exclusive right to write shards under the shard root ``root`` (a Folder). Use as a
    context manager; entering raises UserError (one line naming the holder) when another run
    holds it."""

    def __init__(self, root: Folder):
        self.root = root
        self.owner = _owner()
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "ShardLock":
        self.root.makedirs()
        path = _local_path(self.root)
        if path is not None:
            self._lock_file(os.path.join(path, LOCK_NAME))
        else:
            self._lock_object()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- local: flock ---------------------------------------------------------------------------
    def _lock_file(self, path: str) -> None:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_owner(lambda: os.pread(fd, 4096, 0))
            os.close(fd)
            raise UserError(f"{_describe(holder)} is writing to {self.root.url} (lock {path}); "
                            "wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.owner).encode(), 0)
        self._fd = fd

    # -- object stores: a best-effort lock object ------------------------------------------------
    def _lock_object(self) -> None:
        holder = _read_owner(lambda: self.root.read_bytes(LOCK_NAME))
        if holder is not None and time.time() - float(holder.get("time", 0)) < STALE_AFTER_S:
            raise UserError(f"{_describe(holder)} is writing to {self.root.url} (lock object "
                            f"{self.root.url_of(LOCK_NAME)}, refreshed within {STALE_AFTER_S:.0f}s); wait for it "
                            "to finish, or remove the object if that run is gone")
        self._write_object()
        time.sleep(SETTLE_S)  # a run that wrote in the meantime replaced our token: it goes on, we stop
        holder = _read_owner(lambda: self.root.read_bytes(LOCK_NAME))
        if holder is None or holder.get("token") != self.owner["token"]:
            raise UserError(f"{_describe(holder)} took the lock on {self.root.url} at the same time; "
                            "wait for it to finish")
        self._beat = threading.Thread(target=self._heartbeat, name="igan-shard-lock", daemon=True)
        self._beat.start()

    def _write_object(self) -> None:
        self.owner["time"] = time.time()
        with self.root.open_write(LOCK_NAME) as f:
            f.write(json.dumps(self.owner).encode())

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write_object()
            except OSError:  # a missed beat only ages the lock; the next one may get through
                pass

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._beat is not None:
            self._stop.set()
            self._beat.join()
            self._beat = None
            holder = _read_owner(lambda: self.root.read_bytes(LOCK_NAME))
            if holder is not None and holder.get("token") == self.owner["token"]:
                self.root.remove(LOCK_NAME)


def _read_owner(read) -> dict | None:
    """The lock's owner record as ``read()`` returns it, or None when absent or unreadable."""
    try:
        owner = json.loads(read() or b"null")
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


__all__ = ["ShardLock", "LOCK_NAME"]

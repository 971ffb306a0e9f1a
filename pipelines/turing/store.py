"""The SQLite store of ``igan turing``: fixed image sets (PNG bytes, truth, order) and every answer.

One database file (``$IGAN_HOME/turing.db``) holds three tables:

* ``image_sets``: one row per (model, data root, split, n, seed), found again by its ``key``;
* ``images``: the set's images in their seeded order; ``image_id`` is the position in that order,
  so an id tells nothing about whether the image is real;
* ``answers``: one row per (set, annotator, image), stored as given.

Every write is one SQLite transaction (all-or-nothing on disk), and a new connection is opened per
call, so a crash or a killed server loses at most the request in flight and threads never share one.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ANSWERS = ("real", "generated")
MAX_NAME = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS image_sets (
    set_id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    model_uri TEXT NOT NULL,
    model_name TEXT,
    model_version TEXT,
    run_id TEXT NOT NULL,
    data TEXT NOT NULL,
    split TEXT NOT NULL,
    n INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    set_id INTEGER NOT NULL REFERENCES image_sets(set_id),
    image_id INTEGER NOT NULL,
    truth TEXT NOT NULL CHECK (truth IN ('real', 'generated')),
    source TEXT NOT NULL,
    png BLOB NOT NULL,
    PRIMARY KEY (set_id, image_id)
);
CREATE TABLE IF NOT EXISTS answers (
    set_id INTEGER NOT NULL,
    annotator TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    answer TEXT NOT NULL CHECK (answer IN ('real', 'generated')),
    answered_at REAL NOT NULL,
    PRIMARY KEY (set_id, annotator, image_id),
    FOREIGN KEY (set_id, image_id) REFERENCES images(set_id, image_id)
);
"""


class StoreError(ValueError):
    """A request the store refuses; ``status`` is the HTTP status it maps to (400, 404, 409)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageItem:
    """One image of a set: ``truth`` (``real`` | ``generated``), ``source`` (the shard key of a real
    image, ``sample-<i>`` of a generated one) and its PNG bytes."""
    truth: str
    source: str
    png: bytes


def set_key(run_id: str, name: str | None, version: str | None, data: str, split: str, n: int, seed: int) -> str:
    """The string that identifies an image set: the same inputs always give the same set."""
    return "|".join(str(part) for part in (name or "", version or "", run_id, data, split, n, seed))


def check_annotator(name) -> str:
    """The annotator name stripped of surrounding space; StoreError (400) unless it is a non-empty
    printable string of at most 64 characters."""
    if not isinstance(name, str) or not name.strip():
        raise StoreError("'annotator' must be a non-empty name")
    name = name.strip()
    if len(name) > MAX_NAME or not name.isprintable():
        raise StoreError(f"'annotator' must be printable and at most {MAX_NAME} characters")
    return name


class TuringStore:
    """The database at ``path`` (created with its tables on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            db.executescript(_SCHEMA)  # idempotent; executescript commits on its own

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None + explicit BEGIN IMMEDIATE: the write lock is taken up front, so two
        # servers (or threads) never interleave a read-check-write; COMMIT makes it durable at once.
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _read(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    # -- image sets ------------------------------------------------------------------------------
    def find_set(self, key: str) -> int | None:
        """The id of the set stored under ``key``, or None."""
        with closing(self._read()) as db:
            row = db.execute("SELECT set_id FROM image_sets WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def create_set(self, key: str, meta: dict, images: list[ImageItem]) -> int:
        """Store ``images`` (already in display order) as the set ``key`` in one transaction and return
        its id; when the set exists already (another process made it first) its id, unchanged.
        ``meta`` holds ``model_uri, model_name, model_version, run_id, data, split, n, seed, width, height``."""
        if not images:
            raise ValueError("an image set needs at least one image")
        with self._transaction() as db:
            row = db.execute("SELECT set_id FROM image_sets WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return int(row[0])
            cur = db.execute(
                "INSERT INTO image_sets (key, model_uri, model_name, model_version, run_id, data, split, n, seed,"
                " width, height, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, meta["model_uri"], meta.get("model_name"), meta.get("model_version"), meta["run_id"],
                 meta["data"], meta["split"], int(meta["n"]), int(meta["seed"]), int(meta["width"]),
                 int(meta["height"]), time.time()))
            set_id = int(cur.lastrowid)
            db.executemany("INSERT INTO images (set_id, image_id, truth, source, png) VALUES (?, ?, ?, ?, ?)",
                           [(set_id, i, item.truth, item.source, item.png) for i, item in enumerate(images)])
        return set_id

    def set_info(self, set_id: int) -> dict:
        """The set's stored fields plus ``total`` (its number of images); KeyError for an unknown id."""
        with closing(self._read()) as db:
            row = db.execute("SELECT * FROM image_sets WHERE set_id = ?", (set_id,)).fetchone()
            if row is None:
                raise KeyError(f"no image set {set_id}")
            total = db.execute("SELECT COUNT(*) FROM images WHERE set_id = ?", (set_id,)).fetchone()[0]
        return {**dict(row), "total": int(total)}

    def sets_for_model(self, run_id: str, name: str | None, version: str | None, **filters) -> list[int]:
        """Ids of the sets of one model version (or, without a registered version, of one run),
        narrowed by the given ``data``/``split``/``n``/``seed`` filters that are not None."""
        if name and version:
            where, params = ["model_name = ?", "model_version = ?"], [name, version]
        else:
            where, params = ["run_id = ?", "model_version IS NULL"], [run_id]
        for column in ("data", "split", "n", "seed"):
            if filters.get(column) is not None:
                where.append(f"{column} = ?")
                params.append(filters[column])
        with closing(self._read()) as db:
            rows = db.execute(f"SELECT set_id FROM image_sets WHERE {' AND '.join(where)} ORDER BY set_id",
                              params).fetchall()
        return [int(r[0]) for r in rows]

    def image_png(self, set_id: int, image_id: int) -> bytes:
        """The PNG bytes of one image; StoreError (404) for an unknown id."""
        with closing(self._read()) as db:
            row = db.execute("SELECT png FROM images WHERE set_id = ? AND image_id = ?",
                             (set_id, image_id)).fetchone()
        if row is None:
            raise StoreError(f"no image {image_id} in this test", 404)
        return bytes(row[0])

    # -- answers ---------------------------------------------------------------------------------
    def progress(self, set_id: int, annotator: str) -> dict:
        """``{"answered", "total", "next"}`` for ``annotator``: ``next`` is the first image id in the
        set's order that they have not answered, None when they are done."""
        annotator = check_annotator(annotator)
        with closing(self._read()) as db:
            total = db.execute("SELECT COUNT(*) FROM images WHERE set_id = ?", (set_id,)).fetchone()[0]
            answered = db.execute("SELECT COUNT(*) FROM answers WHERE set_id = ? AND annotator = ?",
                                  (set_id, annotator)).fetchone()[0]
            row = db.execute(
                "SELECT MIN(image_id) FROM images WHERE set_id = ? AND image_id NOT IN "
                "(SELECT image_id FROM answers WHERE set_id = ? AND annotator = ?)",
                (set_id, set_id, annotator)).fetchone()
        return {"answered": int(answered), "total": int(total), "next": None if row[0] is None else int(row[0])}

    def record_answer(self, set_id: int, annotator, image_id, answer) -> bool:
        """Save one answer atomically and return whether it was right. StoreError and nothing saved
        for a bad name or answer (400), an unknown image (404) or an image already answered (409)."""
        annotator = check_annotator(annotator)
        if answer not in ANSWERS:
            raise StoreError(f"'answer' must be one of {', '.join(ANSWERS)}")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise StoreError("'image_id' must be an integer")
        with self._transaction() as db:
            row = db.execute("SELECT truth FROM images WHERE set_id = ? AND image_id = ?",
                             (set_id, image_id)).fetchone()
            if row is None:
                raise StoreError(f"no image {image_id} in this test", 404)
            seen = db.execute("SELECT 1 FROM answers WHERE set_id = ? AND annotator = ? AND image_id = ?",
                              (set_id, annotator, image_id)).fetchone()
            if seen is not None:
                raise StoreError(f"{annotator} has already answered image {image_id}", 409)
            db.execute("INSERT INTO answers (set_id, annotator, image_id, answer, answered_at) VALUES (?, ?, ?, ?, ?)",
                       (set_id, annotator, image_id, answer, time.time()))
        return row[0] == answer

    def answers(self, set_ids: list[int]) -> list[dict]:
        """Every answer of the given sets, oldest first, joined with its image's truth and source and
        its set's data, split, n and seed: a list of dicts (the rows of the CSV)."""
        if not set_ids:
            return []
        marks = ", ".join("?" * len(set_ids))
        with closing(self._read()) as db:
            rows = db.execute(
                "SELECT a.set_id, s.data, s.split, s.n, s.seed, a.annotator, a.image_id, i.truth, a.answer,"
                " (i.truth = a.answer) AS correct, i.source, a.answered_at"
                " FROM answers a JOIN images i ON i.set_id = a.set_id AND i.image_id = a.image_id"
                f" JOIN image_sets s ON s.set_id = a.set_id WHERE a.set_id IN ({marks})"
                " ORDER BY a.answered_at, a.rowid", set_ids).fetchall()
        return [{**dict(r), "correct": bool(r["correct"])} for r in rows]

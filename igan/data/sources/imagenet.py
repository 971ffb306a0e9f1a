"""ImageNet (ILSVRC-2012 CLS-LOC) as files: ``train/<wnid>/*.JPEG`` and ``val/`` either in
``<wnid>`` folders too or flat (``ILSVRC2012_val_NNNNNNNN.JPEG``) with its labels from the devkit
(``ILSVRC2012_validation_ground_truth.txt`` + ``meta.mat``) or Kaggle's ``LOC_val_solution.csv``.

Class ``k`` is the ``k``-th wnid in sorted order (torchvision's ``ImageFolder`` order). Class names
are the words of a wnid->words file (``LOC_synset_mapping.txt``, ``synset_words.txt`` or
``words.txt``: ``wnid<space or tab>words`` per line) found in ``--src`` or passed as ``words_file``;
without one they are the wnids. Files are read as bytes; decoding happens in the shard pipeline,
which skips unreadable ones.
"""
from __future__ import annotations

import csv
import os
import re
from typing import Iterator

from igan.data.sources.base import Entry, Record, Source, SourceError, describe_error

EXTENSIONS = (".jpeg", ".jpg", ".png")
WORDS_FILES = ("LOC_synset_mapping.txt", "synset_words.txt", "words.txt")
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_DIRS = ("", "data", "ILSVRC2012_devkit_t12", os.path.join("ILSVRC2012_devkit_t12", "data"),
               "devkit", os.path.join("devkit", "data"))
_WNID = re.compile(r"^n\d{8}$")
_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]")


def _images(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_file() and e.name.lower().endswith(EXTENSIONS) and not e.name.startswith("."))


def _wnid_dirs(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and _WNID.match(e.name))


def _find_file(root: str, names: tuple[str, ...], dirs: tuple[str, ...] = ("",)) -> str | None:
    for d in dirs:
        for n in names:
            p = os.path.join(root, d, n)
            if os.path.isfile(p):
                return p
    return None


def read_words(path: str) -> dict[str, str]:
    """wnid -> words from a ``wnid<whitespace>words`` file (one synset per line)."""
    out = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.strip().split(None, 1)
            if parts and _WNID.match(parts[0]):
                out[parts[0]] = parts[1].strip() if len(parts) > 1 else parts[0]
    return out


def read_devkit_labels(ground_truth: str, meta_mat: str) -> list[str]:
    """wnid of every validation image in file order (line ``i`` is ``ILSVRC2012_val_{i:08d}``),
    from the devkit's ground-truth ILSVRC2012_IDs mapped through ``meta.mat``'s synsets."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(meta_mat, squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    except Exception as exc:
        raise SourceError(f"{meta_mat} is not the ILSVRC2012 devkit meta.mat ({describe_error(exc)})") from None
    with open(ground_truth) as f:
        ids = [int(line) for line in f if line.strip()]
    try:
        return [id_to_wnid[i] for i in ids]
    except KeyError as exc:
        raise SourceError(f"{ground_truth}: ILSVRC2012_ID {exc} is not in {meta_mat}") from None


def read_loc_solution(path: str) -> dict[str, str]:
    """image id -> wnid from Kaggle's ``LOC_val_solution.csv`` (first wnid of PredictionString)."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out[row["ImageId"]] = row["PredictionString"].split()[0]
    return out


def make_key(name: str) -> str:
    """WebDataset-safe key of a file name: the stem with characters other than ``[A-Za-z0-9_-]``
    replaced by ``_`` (a dot would split the key)."""
    return _KEY_BAD.sub("_", os.path.splitext(name)[0])


class ImageNetSource(Source):
    """``imagenet``: variable-size JPEG files, 1,000 classes (as many as wnid folders here),
    sharded as RGB JPEG (quality 95) of 128x128 by default; splits train and val."""

    name = "imagenet"
    channels = 3
    fmt = "jpg"
    native_size = None
    default_image_size = 128
    samples_per_shard = 1000

    def __init__(self, src: str | None = None, words_file: str | None = None, devkit: str | None = None):
        super().__init__(src)
        root = self.src_path(folder="a folder holding train/ and val/")
        kaggle = os.path.join(root, "ILSVRC", "Data", "CLS-LOC")
        self.meta_root = root
        self.root = kaggle if os.path.isdir(kaggle) else root
        self._splits = [s for s in ("train", "val") if os.path.isdir(os.path.join(self.root, s))]
        if not self._splits:
            raise SourceError(f"no train/ or val/ folder in {src}; not an ImageNet tree")
        self.words_file = words_file or _find_file(root, WORDS_FILES, ("",) + DEVKIT_DIRS)
        self.devkit = devkit
        self._wnids: list[str] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_wnids"] = None
        return state

    # -- classes ---------------------------------------------------------------------------
    def wnids(self) -> list[str]:
        """Sorted wnids: the train folders, else val's folders, else those of the val labels."""
        if self._wnids is None:
            wnids = []
            for split in self._splits:
                wnids = _wnid_dirs(os.path.join(self.root, split))
                if wnids:
                    break
            if not wnids and "val" in self._splits:
                wnids = sorted(set(self._flat_val_labels().values()))
            if not wnids:
                raise SourceError(f"no class folders (nXXXXXXXX) under {self.root}/train or val")
            self._wnids = wnids
        return self._wnids

    def classes(self) -> list[str]:
        words = read_words(self.words_file) if self.words_file else {}
        return [words.get(w, w) for w in self.wnids()]

    def splits(self) -> list[str]:
        return list(self._splits)

    # -- index -----------------------------------------------------------------------------
    def _flat_val_labels(self) -> dict[str, str]:
        """file name -> wnid for a flat val/ folder."""
        val = os.path.join(self.root, "val")
        files = _images(val)
        dirs = ((self.devkit,) if self.devkit else ()) + tuple(os.path.join(self.meta_root, d) for d in DEVKIT_DIRS)
        gt = _find_file("", tuple(os.path.join(d, GROUND_TRUTH) for d in dirs))
        meta = _find_file("", tuple(os.path.join(d, "meta.mat") for d in dirs))
        if gt and meta:
            wnids = read_devkit_labels(gt, meta)
            out = {}
            for name in files:
                m = re.search(r"(\d+)$", os.path.splitext(name)[0])
                i = int(m.group(1)) if m else 0
                if not 1 <= i <= len(wnids):
                    raise SourceError(f"val/{name}: no line {i} in {gt}")
                out[name] = wnids[i - 1]
            return out
        sol = _find_file(self.meta_root, ("LOC_val_solution.csv",), ("",) + DEVKIT_DIRS + ("..",))
        if sol:
            by_id = read_loc_solution(sol)
            missing = [n for n in files if os.path.splitext(n)[0] not in by_id]
            if missing:
                raise SourceError(f"val/{missing[0]} has no row in {sol}")
            return {n: by_id[os.path.splitext(n)[0]] for n in files}
        raise SourceError(f"flat {val} needs the devkit's {GROUND_TRUTH} and meta.mat "
                          f"(or LOC_val_solution.csv) in --src")

    def entries(self, split: str) -> list[Entry]:
        self.check_split(split)
        folder = os.path.join(self.root, split)
        index = {w: k for k, w in enumerate(self.wnids())}
        pairs: list[tuple[str, str]] = []  # (relative path, wnid)
        dirs = _wnid_dirs(folder)
        if dirs:
            for wnid in dirs:
                if wnid not in index:
                    raise SourceError(f"{split}/{wnid} is not one of the {len(index)} train classes")
                pairs.extend((f"{wnid}/{name}", wnid) for name in _images(os.path.join(folder, wnid)))
        elif split == "val":
            labels = self._flat_val_labels()
            for name, wnid in sorted(labels.items()):
                if wnid not in index:
                    raise SourceError(f"val/{name}: class {wnid} has no train folder")
                pairs.append((name, wnid))
        out, seen = [], set()
        for rel, wnid in pairs:
            key = make_key(os.path.basename(rel))
            if key in seen:
                key = make_key(rel.replace("/", "__"))
            seen.add(key)
            out.append(Entry(key, index[wnid], rel))
        return out

    def read(self, split: str, entries: list[Entry]) -> Iterator[Record]:
        folder = os.path.join(self.root, split)
        for e in entries:
            path = os.path.join(folder, e.loc)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                yield Record(e.key, e.label, path, error=describe_error(exc))
                continue
            if not data:
                yield Record(e.key, e.label, path, error="empty file")
                continue
            yield Record(e.key, e.label, path, data=data)

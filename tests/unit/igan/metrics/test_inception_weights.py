"""Inception-v3 weights on clusters: URIs in ``IGAN_INCEPTION_WEIGHTS`` / ``$IGAN_CACHE/inception``
fetched once into the local cache, one-line errors for missing and wrong files, and drivers
(``igan train``, ``igan tune``) that stop before any Ray work when the score needs weights that are not
there. Real weights are never downloaded: ``inception_weights_file`` (conftest) is torchvision's file
layout with untrained weights."""
from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
import uuid

import fsspec
import pytest
import torch

from igan.config import apply_overrides
from igan.presets import get_preset

from helpers import REPO  # noqa: E402
FILE = "inception_v3_google-0cc3c7bd.pth"


@pytest.fixture
def memory_folder():
    """A fresh folder URI in fsspec's in-process ``memory://`` store, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/igan-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{root}", fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


def _cifar(*overrides: str):
    return apply_overrides(get_preset("cifar10"), list(overrides))


# -- the library: finding, fetching, loading -------------------------------------------------------
def test_memory_uri_is_fetched_once_and_scores(inception_weights_file, no_weights, memory_folder, monkeypatch):
    from igan.evaluation import make_scorer, require_scorer, score_samples

    uri, fs, root = memory_folder
    fs.pipe(f"{root}/{FILE}", inception_weights_file.read_bytes())
    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", f"{uri}/{FILE}")
    cfg = _cifar("eval.splits=1")
    local = pathlib.Path(require_scorer(cfg))
    assert local.is_file() and no_weights / "inception" in local.parents and local.name == FILE
    assert [p.name for p in local.parent.iterdir()] == [FILE]  # no temporary file left beside it
    fs.rm(root, recursive=True)  # gone from the store: later loads use the node's copy
    scorer = make_scorer(cfg)
    expected = torch.load(inception_weights_file, weights_only=True)["fc.weight"]
    torch.testing.assert_close(scorer.net.fc.weight.detach().cpu(), expected)
    samples = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = score_samples(samples, cfg, scorer)
    assert 1.0 <= scores["inception_score"] <= 4.0


def test_uri_folder_in_cache_and_env(inception_weights_file, no_weights, memory_folder, monkeypatch):
    from igan.metrics.inception_net import fetched_path, resolve_weights

    uri, fs, root = memory_folder
    fs.pipe(f"{root}/inception/{FILE}", inception_weights_file.read_bytes())
    monkeypatch.setenv("IGAN_CACHE", uri)  # the shared cache itself in an object store
    monkeypatch.setenv("HOME", str(no_weights.parent / "home"))  # where this node's copies go then
    local = resolve_weights(None, "torchvision")
    assert local == fetched_path(f"{uri}/inception/{FILE}") and local.is_file()
    assert (no_weights.parent / "home" / ".cache" / "igan" / "inception") in local.parents
    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", f"{uri}/inception/")  # a folder URI holding the file
    assert resolve_weights(None, "torchvision") == local


def test_file_uri_is_read_in_place(inception_weights_file, no_weights, monkeypatch):
    from igan.evaluation import require_scorer

    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", f"file://{inception_weights_file.parent}")
    assert require_scorer(_cifar()) == str(inception_weights_file)
    assert not no_weights.exists()  # nothing copied


def test_missing_uri_names_env_var_cache_and_uris(no_weights, monkeypatch):
    from igan.metrics import InceptionWeightsNotFound
    from igan.metrics.inception_net import resolve_weights

    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", "memory://igan-test-nowhere/w.pth")
    with pytest.raises(InceptionWeightsNotFound) as err:
        resolve_weights(None, "torchvision")
    msg = _one_line(err.value)
    assert "memory://igan-test-nowhere/w.pth" in msg and "IGAN_INCEPTION_WEIGHTS" in msg
    assert str(no_weights / "inception") in msg and "URI" in msg and FILE in msg


def test_interrupted_fetch_leaves_no_file(no_weights, monkeypatch):
    import igan.data.storage as storage
    from igan.metrics import InceptionWeightsNotFound
    from igan.metrics.inception_net import fetched_path, resolve_weights

    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell():
                raise ConnectionResetError("connection reset by peer")
            return super().read(4)

    uri = "memory://igan-test-broken/w.pth"
    fsspec.filesystem("memory").pipe("/igan-test-broken/w.pth", b"12345678")
    try:
        monkeypatch.setattr(storage, "open_read", lambda url: Broken(b"12345678"))
        monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", uri)
        with pytest.raises(InceptionWeightsNotFound, match="connection reset") as err:
            resolve_weights(None, "torchvision")
        assert uri in _one_line(err.value)
        folder = fetched_path(uri).parent
        assert not folder.exists() or list(folder.iterdir()) == []  # neither the file nor a temporary one
    finally:
        fsspec.filesystem("memory").rm("/igan-test-broken", recursive=True)


class _Evil:
    """A pickle that creates a file when unpickled without ``weights_only``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("content", ["other_net", "not_torch", "code"])
def test_wrong_file_is_one_line_naming_it(content, no_weights, tmp_path, monkeypatch):
    from igan.metrics import InceptionWeightsInvalid
    from igan.metrics.inception_net import load_inception

    path, marker = tmp_path / f"{content}.pth", tmp_path / "pwned"
    if content == "other_net":
        torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    elif content == "not_torch":
        path.write_text("<html>Access denied</html>")
    else:
        torch.save({"fc.weight": _Evil(marker)}, path)
    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", str(path))
    with pytest.raises(InceptionWeightsInvalid) as err:
        load_inception()
    assert str(path) in _one_line(err.value)
    assert not marker.exists()  # loaded with weights_only: the file's code never ran


def test_wrong_fetched_copy_is_dropped(no_weights, memory_folder, monkeypatch):
    from igan.metrics import InceptionWeightsInvalid
    from igan.metrics.inception_net import fetched_path, load_inception

    uri, fs, root = memory_folder
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(3, 2).state_dict(), buf)
    fs.pipe(f"{root}/{FILE}", buf.getvalue())
    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", f"{uri}/{FILE}")
    with pytest.raises(InceptionWeightsInvalid) as err:
        load_inception()
    assert f"{uri}/{FILE}" in _one_line(err.value) and "missing keys" in str(err.value)
    assert not fetched_path(f"{uri}/{FILE}").exists()  # a fixed file in the store is fetched next time


def test_make_scorer_raises_instead_of_skipping(no_weights):
    from igan.evaluation import make_scorer, require_scorer
    from igan.metrics import InceptionWeightsNotFound

    with pytest.raises(InceptionWeightsNotFound):
        make_scorer(_cifar())
    with pytest.raises(InceptionWeightsNotFound):
        require_scorer(_cifar())
    for scorer in ("none", "domain"):
        assert require_scorer(_cifar(f"eval.scorer={scorer}")) is None
    assert make_scorer(_cifar("eval.scorer=none")) is None


# -- the drivers: no Ray work without the weights ----------------------------------------------------
class _Started(Exception):
    """Raised by the stand-ins for the steps after the checks (data, Ray)."""


@pytest.fixture
def no_work(monkeypatch):
    """The drivers' data and Ray steps replaced by :class:`_Started`: reaching them means the
    checks passed; never reaching them means nothing started."""
    import pipelines.job_inputs as job_inputs
    import pipelines.ray_runtime as ray_runtime
    import pipelines.train as train

    def started(*args, **kwargs):
        raise _Started()

    for module in (train, job_inputs):
        monkeypatch.setattr(module, "ensure_data", started)
    for module in (train, ray_runtime):
        monkeypatch.setattr(module, "init_ray", started)


def test_run_training_stops_before_work_without_weights(no_weights, no_work, tmp_path, monkeypatch):
    from pipelines.errors import UserError
    from pipelines.train import TrainOptions, run_training

    def opts(*overrides):
        return TrainOptions(preset="digits", overrides=["train.epochs=1", *overrides],
                            storage=str(tmp_path / "storage"), tracking_uri=f"sqlite:///{tmp_path}/m.db")

    with pytest.raises(UserError) as err:
        run_training(opts("eval.scorer=inception"))
    msg = _one_line(err.value)
    assert "IGAN_INCEPTION_WEIGHTS" in msg and str(no_weights / "inception") in msg and "URI" in msg
    assert "eval.scorer=none" in msg
    assert not (tmp_path / "storage").exists()
    with pytest.raises(_Started):  # a score that needs no weights goes on
        run_training(opts("eval.scorer=none"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, wrong)
    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", str(wrong))
    with pytest.raises(UserError, match="missing keys") as err:
        run_training(opts("eval.scorer=inception"))
    assert str(wrong) in _one_line(err.value)


@pytest.mark.parametrize("space", ["cifar10", "imagenet128"])
def test_run_search_stops_before_work_without_weights(space, no_weights, no_work, tmp_path):
    from pipelines.errors import UserError
    from pipelines.tune import TuneOptions, run_search

    def opts(*overrides):
        return TuneOptions(space=space, num_samples=2, overrides=list(overrides), storage=str(tmp_path / "tune"),
                           tracking_uri=f"sqlite:///{tmp_path}/m.db")

    with pytest.raises(UserError) as err:
        run_search(opts())
    assert "IGAN_INCEPTION_WEIGHTS" in _one_line(err.value)
    if space == "cifar10":  # its metric is the SSL error: without the score it needs no weights
        with pytest.raises(_Started):
            run_search(opts("eval.scorer=none"))


def test_cli_train_cifar10_without_weights_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("IGAN_INCEPTION_WEIGHTS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(REPO), IGAN_HOME=str(tmp_path / "home"), IGAN_CACHE=str(tmp_path / "cache"),
               TORCH_HOME=str(tmp_path / "torch"))
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", "--preset", "cifar10",
                          "--set", "train.epochs=1"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "IGAN_INCEPTION_WEIGHTS" in lines[0] and str(tmp_path / "cache" / "inception") in lines[0]
    assert not (tmp_path / "home" / "ray_results").exists()


def test_file_without_batch_counters_still_loads(inception_weights_file, no_weights, tmp_path):
    from igan.metrics.inception_net import load_inception

    state = torch.load(inception_weights_file, weights_only=True)
    old = tmp_path / FILE  # as saved before BatchNorm had num_batches_tracked
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, old)
    net = load_inception(old)
    torch.testing.assert_close(net.Conv2d_1a_3x3.conv.weight.detach(), state["Conv2d_1a_3x3.conv.weight"])


def test_worker_evaluator_fails_instead_of_skipping_the_score(no_weights):
    from igan.metrics import InceptionWeightsNotFound
    from igan.evaluator import Evaluator

    cfg = apply_overrides(get_preset("ring8"), ["eval.scorer=inception"])  # in-memory data, no shards
    with pytest.raises(InceptionWeightsNotFound):
        Evaluator(cfg, None, 0, 1)  # rank 0 builds the scorer

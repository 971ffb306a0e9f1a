"""Shared fixtures. ``mlflow_server``: a real ``mlflow server`` on 127.0.0.1 for the whole session;
``own_mlflow_server``: one for a single test module."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from helpers import free_port


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running_mlflow_server(root: Path) -> Iterator[str]:
    """Start ``mlflow server`` (this venv's MLflow) on a free port of 127.0.0.1 with a sqlite backend
    and a local ``--artifacts-destination`` in ``root``; wait for ``/health``; yield its URI
    (``http://127.0.0.1:PORT``); stop its whole process group on leaving."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: lighter, faster
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n"
                            + log_path.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not answer /health within 120 s:\n"
                            + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        try:  # workers the server left behind in its group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 for the whole session (:func:`running_mlflow_server`);
    yields its URI (``http://127.0.0.1:PORT``)."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as url:
        yield url


@pytest.fixture(scope="module")
def own_mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` for one test module alone: for tests whose registered models would
    change the versions other modules expect on the shared :func:`mlflow_server`."""
    with running_mlflow_server(tmp_path_factory.mktemp("own_mlflow_server")) as url:
        yield url


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for this test module (2 CPUs, no dashboard), unless one is already running."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    """A shard root of the embedded digits set (train and test), written without Ray."""
    from pipelines.shard import shard_dataset

    root = tmp_path_factory.mktemp("digits_shards")
    shard_dataset("digits", str(root), engine="local", log=lambda m: None)
    return str(root)


@pytest.fixture
def igan_home(tmp_path, monkeypatch):
    """A private IGAN_HOME (default MLflow store, storage, caches) and quiet MLflow transfers."""
    monkeypatch.setenv("IGAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return tmp_path / "home"


@pytest.fixture(scope="session")
def inception_weights_file(tmp_path_factory):
    """A file laid out like torchvision's ``inception_v3_google-0cc3c7bd.pth`` (the state dict of
    ``inception_v3(aux_logits=True)``, auxiliary head included), with untrained weights: the real
    network's file format without a download (about 100 MB, written once per session)."""
    import torch
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path_factory.mktemp("inception_weights") / "inception_v3_google-0cc3c7bd.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def inception_tf2015_file(tmp_path_factory):
    """A file laid out like the port of the 2015-12-05 graph (``pt_inception-2015-12-05-6726825d.pth``:
    the state dict of :func:`igan.metrics.inception_net.build_inception` ``("tf2015")``, 1008 classes),
    with untrained weights (about 100 MB, written once per session)."""
    import torch

    from igan.metrics.inception_net import build_inception

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("inception_tf2015") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(build_inception("tf2015").state_dict(), path)
    return path


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No Inception weights anywhere: a private, empty ``IGAN_CACHE`` (returned; not created) and
    torch hub folder, no ``IGAN_INCEPTION_WEIGHTS``."""
    monkeypatch.delenv("IGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("IGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "cache"


@pytest.fixture
def small_inception_inputs(monkeypatch):
    """The Inception networks on 75x75 inputs (their smallest): the same code, a fraction of the time."""
    import igan.metrics.inception_net as inet

    monkeypatch.setattr(inet, "INPUT_SIZE", 75)

"""``igan train`` on a real two-node Ray cluster on this machine: a head and a second node started
with ``ray start`` as separate processes, as on a cluster (see cluster/README.md, "Multi-node on one
machine").

- ``ray job submit -- igan train ...`` through the head's job server: the job SUCCEEDED, its workers
  ran on both nodes and its run is in MLflow.
- ``igan train --address ...`` while the second node is killed mid-run (SIGKILL to its whole process
  group, after the first checkpoint): Ray Train restarts the worker group from the latest checkpoint
  on the head and a replacement node, and the job ends exactly as an uninterrupted run does.
- ``igan train --gpus-per-worker 1`` on this GPU-less cluster: a short ``--wait-for-resources`` ends
  with one line and exit 1; a longer one waits, saying what for, until a node with a (logical) GPU
  joins (``ray start --num-gpus 1``), then goes on to start its worker.

The cluster is private to this module: its own temp dir (so ``ray.init()`` elsewhere never finds it),
free ports, token authentication with a token of its own, 1 CPU per node, and teardown by process
group (never ``ray stop``, which would stop every Ray on the machine).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO
from helpers.train_jobs import MULTINODE_TINY as TINY
from helpers.train_jobs import checkpoint_registered, job_checkpoints, multinode_train_args

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
STEPS = 4 * 5
START_TIMEOUT = 180  # a node on a busy 2-core machine can take a minute
JOB_TIMEOUT = 480
BASELINE: dict = {}  # the uninterrupted run's summary (the job-submit test), for the node-loss test


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"({path} unreadable)"


def _pids_using(folder: Path) -> set[int]:
    """Processes with a file open under ``folder`` (Ray's processes keep their logs open in their
    session dir): how teardown finds this cluster's strays, and only them."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd).startswith(str(folder)) for fd in (proc / "fd").iterdir()):
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


class Cluster:
    """A Ray head plus worker nodes on this machine, each a ``ray start --block`` in its own process
    group, so a node is killed as a whole (raylet, agents and its workers fate-share the raylet)."""

    def __init__(self, base: Path):
        self.base = base
        self.port = _free_port()
        self.dashboard_port = _free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO), IGAN_HOME=str(base / "home"),
            RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),  # its own token, not ~/.ray's
            RAY_USAGE_STATS_ENABLED="0", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        )
        self.env = env

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_node(self, name: str, head: bool = False, extra: tuple[str, ...] = ()) -> None:
        cmd = [str(BIN / "ray"), "start", "--block", "--num-cpus=1", *extra, "--node-ip-address=127.0.0.1",
               f"--temp-dir={self.base / name}", "--object-store-memory=100000000", "--disable-usage-stats",
               "--include-log-monitor=false", f"--dashboard-agent-listen-port={_free_port()}"]
        if head:
            cmd += ["--head", f"--port={self.port}", f"--ray-client-server-port={_free_port()}",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        else:
            cmd += [f"--address={self.address}"]
        log = self.base / f"{name}.log"
        with open(log, "wb") as out:
            self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while "Ray runtime started" not in _tail(log, 100_000):
            if self.procs[name].poll() is not None:
                pytest.fail(f"ray start ({name}) exited with {self.procs[name].returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"ray start ({name}) not up within {START_TIMEOUT}s:\n{_tail(log)}")
            time.sleep(0.5)

    def wait_for_dashboard(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=5).close()
                return
            except urllib.error.HTTPError:  # it answers (401 without the token): up
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the dashboard (job server) did not answer within {START_TIMEOUT}s:\n"
                                + _tail(self.base / "head" / "session_latest" / "logs" / "dashboard.log"))
                time.sleep(1)

    def job(self, submission_id: str) -> dict:
        """The job server's record of a job (``status``, ``entrypoint``, ...)."""
        request = urllib.request.Request(f"{self.dashboard}/api/jobs/{submission_id}",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def kill_node(self, name: str) -> None:
        """The node dies abruptly: SIGKILL to its whole process group."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "head"] + (["head"] if "head" in self.procs else []):
            proc = self.procs.pop(name)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
        for pid in _pids_using(self.base):  # workers live in process groups of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("ray", path=str(BIN)) is None or shutil.which("igan", path=str(BIN)) is None:
        pytest.skip(f"no ray/igan scripts in {BIN} (pip install -e '.[dev]')")
    try:
        import aiohttp_cors  # noqa: F401  (the dashboard and its job server need ray[default])
    except ImportError:
        pytest.skip("ray[default] is not installed (pip install -c constraints.txt -e '.[dev]')")
    base = Path(tempfile.mkdtemp(prefix="igan-mn-", dir="/tmp"))  # short: Ray's socket paths
    c = Cluster(base)
    try:
        t0 = time.monotonic()
        c.start_node("head", head=True)
        c.start_node("node2")
        c.wait_for_dashboard()
        print(f"cluster up in {time.monotonic() - t0:.0f}s at {c.address}, dashboard {c.dashboard}")
        yield c
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def digits(cluster):
    """digits shards in a folder every node can read (one machine: a local path)."""
    from pipelines.shard import shard_dataset

    root = cluster.base / "digits"
    shard_dataset("digits", str(root), engine="local", log=lambda m: None)
    return str(root)


def _last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in the output:\n{text[-3000:]}")


def _check_mlflow(tracking: str, run_id: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {m.step for m in client.get_metric_history(run_id, "loss_d")} == {1, 2, 3, 4}
    assert {m.step for m in client.get_metric_history(run_id, "val_ssl_error")} == {2, 4}
    assert "checkpoint" in {f.path for f in client.list_artifacts(run_id)}


def _spread(attempt: dict) -> set[str]:
    nodes = set(attempt["nodes"])
    assert len(attempt["nodes"]) == 2 and len(nodes) == 2, f"the 2 workers are not on 2 nodes: {attempt}"
    return nodes


def test_ray_job_submit(cluster, digits, mlflow_server):
    t0 = time.monotonic()
    sid = f"igan-mn-{secrets.token_hex(3)}"
    storage = cluster.base / "storage"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--submission-id", sid, "--",
           *multinode_train_args(digits, storage, "submitted", mlflow_server)]
    res = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"ray job submit exited with {res.returncode}:\n{out[-4000:]}"
    assert cluster.job(sid)["status"] == "SUCCEEDED"

    summary = _last_json(res.stdout)
    assert summary["step"] == STEPS and summary["workers"] == 2
    assert [a["epochs_done"] for a in summary["attempts"]] == [0]
    _spread(summary["attempts"][0])
    _check_mlflow(mlflow_server, summary["run_id"])
    BASELINE.update(summary)
    print(f"ray job submit: {time.monotonic() - t0:.0f}s")


def test_node_killed_mid_run_resumes_from_checkpoint(cluster, digits, mlflow_server):
    t0 = time.monotonic()
    storage = cluster.base / "storage"
    name = "node-loss"
    job = storage / name
    gate = cluster.base / f"gate-{secrets.token_hex(3)}"
    out_path, err_path = cluster.base / f"{name}.out", cluster.base / f"{name}.err"
    args = multinode_train_args(digits, storage, name, mlflow_server) + ["--address", cluster.address]
    # every rank waits at the start of epoch 2 until the gate file exists
    held = [sys.executable, str(REPO / "tests" / "helpers" / "igan_with_hold.py"), "2", str(gate), *args[1:]]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        driver = subprocess.Popen(held, cwd=cluster.base, env=cluster.env, stdout=out, stderr=err,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not checkpoint_registered(job):
            assert driver.poll() is None, f"igan train exited with {driver.returncode}:\n{_tail(err_path)}"
            assert time.monotonic() < deadline, f"no checkpoint in {job} before the deadline:\n{_tail(err_path)}"
            time.sleep(0.5)
        t_kill = time.monotonic()
        cluster.kill_node("node2")  # mid-run: epoch 1 checkpointed, the workers held at epoch 2
        cluster.start_node("node3")  # Ray Train needs the CPUs back to restart the 2-worker group
        gate.touch()
        try:
            driver.wait(timeout=max(10.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"igan train did not finish within {JOB_TIMEOUT}s after the node loss:\n{_tail(err_path)}")
        t_done = time.monotonic()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    log = _tail(err_path, 20_000)
    assert driver.returncode == 0, f"igan train exited with {driver.returncode}:\n{log[-4000:]}"
    assert "continuing after epoch" in log, log[-4000:]

    summary = _last_json(out_path.read_text())
    assert summary["step"] == STEPS  # the same as an uninterrupted run: nothing lost, nothing repeated
    first, last = summary["attempts"][0], summary["attempts"][-1]
    assert first["epochs_done"] == 0 and last["epochs_done"] >= 1, summary["attempts"]
    before, after = _spread(first), _spread(last)
    assert len(before & after) == 1, f"the restart should keep the head and replace the lost node: {summary['attempts']}"
    meta = json.loads((job_checkpoints(job)[-1] / "meta.json").read_text())
    assert meta["epochs_done"] == 4 and meta["step"] == STEPS
    _check_mlflow(mlflow_server, summary["run_id"])
    if BASELINE:  # the same config without the node loss: the same final losses (rank RNG restored too)
        for key in ("loss_d", "loss_g", "val_ssl_error"):
            assert summary["metrics"][key] == pytest.approx(BASELINE["metrics"][key], rel=1e-5), key
    print(f"node loss: checkpoint after {t_kill - t0:.0f}s, finished {t_done - t_kill:.0f}s after the kill")


def test_unreachable_address_is_a_one_line_error(tmp_path):
    """No cluster at --address: exit 2 at once with one line, instead of Ray retrying for minutes."""
    env = dict(os.environ, PYTHONPATH=str(REPO), IGAN_HOME=str(tmp_path))
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", "--address", f"127.0.0.1:{_free_port()}",
                          "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "cannot reach the Ray cluster" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_train_waits_for_a_gpu_node_to_join(cluster, digits):
    """The cluster has no GPU and publishes no autoscaler limits, so nodes may still join: igan train
    asks and waits (not the old refusal), bounded by --wait-for-resources."""
    def args(name: str, wait: str) -> list[str]:
        return [str(BIN / "igan"), "train", "--address", cluster.address, "--gpus-per-worker", "1",
                "--wait-for-resources", wait, "--max-failures", "0", "--data", digits, "--no-register",
                "--storage", str(cluster.base / "storage"), "--name", name,
                "--tracking-uri", f"sqlite:///{cluster.base}/gpu-wait.db", *[a for kv in TINY for a in ("--set", kv)]]

    res = subprocess.run(args("gpu-short", "3"), cwd=cluster.base, env=cluster.env, capture_output=True, text=True,
                         timeout=JOB_TIMEOUT)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("igan train")]
    assert res.returncode == 1, res.stderr[-3000:]
    assert lines[-1].startswith("igan train: error: waited 3s for 1 worker x (1 GPU + 1 CPU), but the cluster "
                                "still has 0 GPU"), res.stderr[-3000:]
    assert "Traceback" not in res.stderr

    err_path = cluster.base / "gpu-wait.log"  # its progress lines go to stdout, Ray's to stderr
    with open(err_path, "wb") as err:
        driver = subprocess.Popen(args("gpu-wait", str(JOB_TIMEOUT)), cwd=cluster.base, env=cluster.env,
                                  stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while "waiting up to" not in _tail(err_path):
            assert driver.poll() is None, f"igan train exited with {driver.returncode}:\n{_tail(err_path)}"
            assert time.monotonic() < deadline, f"igan train did not start waiting:\n{_tail(err_path)}"
            time.sleep(0.5)
        assert "for 1 worker x (1 GPU + 1 CPU) (the cluster has 0 GPU + 2 CPU now)" in _tail(err_path)
        cluster.start_node("gpu", extra=("--num-gpus=1",))  # a logical GPU: this test only needs Ray to count it
        while "has room for 1 worker x (1 GPU + 1 CPU)" not in _tail(err_path):
            assert driver.poll() is None, f"igan train exited with {driver.returncode}:\n{_tail(err_path)}"
            assert time.monotonic() < deadline, f"igan train did not see the GPU node:\n{_tail(err_path)}"
            time.sleep(0.5)
    finally:
        if driver.poll() is None:  # its worker would now need CUDA, which this machine does not have
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        if "gpu" in cluster.procs:
            cluster.kill_node("gpu")

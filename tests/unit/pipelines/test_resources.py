"""Resources that add up: what ``igan train`` / ``igan tune`` reserve, against a fake cluster view
(nodes now, the autoscaler's ceiling, nodes that join while a job waits), then the CLI on a real
local Ray (a GPU job it can never place is refused at once with one line)."""
from __future__ import annotations

import pytest

from pipelines.errors import ResourceWaitTimeout, UserError
from pipelines.resources import copies_that_fit, ensure_resources, pack
from pipelines.scaling import scaling
from pipelines.train import TrainOptions
from pipelines.tune import TRIAL_DRIVER_CPUS, TuneOptions
from pipelines.tune.capacity import concurrency, trial_bundles

LAPTOP = [{"CPU": 2.0, "memory": 8e9}]
CPU_HEAD = {"CPU": 8.0}
GPU_NODE = {"CPU": 16.0, "GPU": 4.0}


class FakeCluster:
    """A :class:`pipelines.resources.ClusterView`: ``nodes`` now, the autoscaler's ``ceiling``
    (None: not published), ``fixed`` (a Ray started here), and ``joins``: nodes that join after
    that many looks at the cluster while a job waits. Records the autoscaler requests."""

    def __init__(self, nodes, ceiling=None, fixed=False, joins=None):
        self._nodes = [dict(n) for n in nodes]
        self._ceiling = ceiling
        self._fixed = fixed
        self.joins = dict(joins or {})  # look number -> list of nodes
        self.looks = 0
        self.requests: list[list[dict]] = []

    def nodes(self):
        self.looks += 1
        self._nodes += self.joins.pop(self.looks, [])
        return [dict(n) for n in self._nodes]

    def ceiling(self):
        return self._ceiling

    def fixed(self):
        return self._fixed

    def request(self, bundles):
        self.requests.append([dict(b) for b in bundles])


class Clock:
    """Fake ``sleep``/``clock``: sleeping moves the clock, nothing really waits."""

    def __init__(self):
        self.t = 0.0
        self.slept = 0

    def sleep(self, s):
        self.t += s
        self.slept += 1

    def __call__(self):
        return self.t


def _lines():
    out: list[str] = []
    return out, out.append


# -- the arithmetic ---------------------------------------------------------------------------------
def test_pack_places_each_bundle_on_one_node():
    assert pack([{"CPU": 1}] * 2, [{"CPU": 1}, {"CPU": 1}])
    assert not pack([{"CPU": 2}], [{"CPU": 1}, {"CPU": 1}])  # 2 CPUs in all, but on no single node
    assert not pack([{"GPU": 1, "CPU": 8}], [CPU_HEAD, {"CPU": 4, "GPU": 1}])
    assert pack([{"CPU": 0.01}, {"CPU": 0.99}] * 2, LAPTOP)


def test_the_stall_arithmetic():
    """Before: a trial reserved 0.01 CPU for its driver plus 1 CPU for its worker, and 2 of them were
    admitted on 2 CPUs; only one fits. Now a trial's driver and workers add up to --cpus-per-trial."""
    assert copies_that_fit([{"CPU": TRIAL_DRIVER_CPUS}, {"CPU": 1.0}], LAPTOP, limit=2) == 1
    bundles = trial_bundles(TuneOptions(space="digits"))
    assert sum(b["CPU"] for b in bundles) == pytest.approx(1.0)
    assert copies_that_fit(bundles, LAPTOP, limit=8) == 2
    two = trial_bundles(TuneOptions(space="digits", workers_per_trial=2, cpus_per_trial=2.0, gpus_per_trial=1.0))
    assert len(two) == 3 and sum(b["CPU"] for b in two) == pytest.approx(2.0)
    assert sum(b.get("GPU", 0) for b in two) == pytest.approx(1.0)


# -- igan train ------------------------------------------------------------------------------------
def test_train_fits_now_without_asking_or_waiting():
    cluster, clock = FakeCluster([CPU_HEAD, GPU_NODE]), Clock()
    lines, log = _lines()
    workers, cpw, threads = scaling(TrainOptions(gpus_per_worker=1.0), cluster, log, sleep=clock.sleep, clock=clock)
    assert (workers, cpw, threads) == (4, 4.0, 4)  # one per GPU; the GPU node's CPUs shared, not the head's
    assert cluster.requests == [] and clock.slept == 0 and lines == []


def test_train_asks_the_autoscaler_and_waits_for_a_gpu_node():
    """No GPU yet, the autoscaler has GPU node types: ask for the worker, wait, say what for, then run
    on the node that joined (the worker gets that node's CPUs)."""
    cluster = FakeCluster([CPU_HEAD], ceiling={"CPU": 72.0, "GPU": 16.0}, joins={8: [GPU_NODE]})
    clock = Clock()
    lines, log = _lines()
    workers, cpw, threads = scaling(TrainOptions(gpus_per_worker=1.0, wait_for_resources=300), cluster, log,
                                    sleep=clock.sleep, clock=clock)
    assert (workers, cpw, threads) == (1, 4.0, 4)
    assert cluster.requests[0] == [{"CPU": 1.0, "GPU": 1.0}]  # asked before the first wait
    assert cluster.requests[-1] == []  # withdrawn: Ray Train asks for its own worker group from here
    assert clock.slept >= 1
    assert "waiting up to 5m00s for 1 worker x (1 GPU + 1 CPU)" in lines[0] and "0 GPU" in lines[0]
    assert "has room for 1 worker" in lines[-1]


def test_train_wait_is_bounded():
    cluster, clock = FakeCluster([CPU_HEAD]), Clock()  # connected, no published ceiling, nothing joins
    lines, log = _lines()
    with pytest.raises(ResourceWaitTimeout) as info:
        scaling(TrainOptions(gpus_per_worker=1.0, workers=2, wait_for_resources=120), cluster, log,
                sleep=clock.sleep, clock=clock)
    message = str(info.value)
    assert "\n" not in message and "waited 2m00s for 2 workers x (1 GPU + 1 CPU)" in message
    assert "still has 0 GPU" in message and "--wait-for-resources" in message
    assert clock.t == pytest.approx(120)
    assert cluster.requests[0] == [{"CPU": 1.0, "GPU": 1.0}] * 2 and cluster.requests[-1] == []
    assert any("still waiting" in line for line in lines)


@pytest.mark.parametrize("cluster", [
    FakeCluster([CPU_HEAD], ceiling={"CPU": 72.0}),  # autoscaler node types without GPUs
    FakeCluster(LAPTOP, fixed=True),                 # a Ray started on this machine
], ids=["autoscaler-without-gpus", "local-ray"])
def test_train_never_fits_is_refused_at_once(cluster):
    clock = Clock()
    with pytest.raises(UserError) as info:
        scaling(TrainOptions(gpus_per_worker=1.0), cluster, lambda m: None, sleep=clock.sleep, clock=clock)
    assert "can never fit" in str(info.value) and "0 GPU" in str(info.value) and "\n" not in str(info.value)
    assert cluster.requests == [] and clock.slept == 0


def test_train_ceiling_too_small_for_the_workers():
    cluster = FakeCluster([CPU_HEAD], ceiling={"CPU": 72.0, "GPU": 8.0})
    with pytest.raises(UserError, match=r"at most 8 GPU"):
        scaling(TrainOptions(gpus_per_worker=1.0, workers=16), cluster, lambda m: None,
                sleep=Clock().sleep, clock=Clock())


def test_train_cpu_workers_that_cannot_fit_on_this_machine():
    """--workers 4 on a 2-CPU local Ray used to wait forever for the worker group; now exit 2."""
    with pytest.raises(UserError, match=r"4 workers x \(1 CPU\) can never fit: this Ray .* 2 CPU"):
        scaling(TrainOptions(workers=4), FakeCluster(LAPTOP, fixed=True), lambda m: None)
    assert scaling(TrainOptions(), FakeCluster(LAPTOP, fixed=True), lambda m: None) == (1, 2.0, 2)


def test_ensure_resources_with_no_wait_checks_once():
    cluster, clock = FakeCluster([CPU_HEAD]), Clock()
    with pytest.raises(ResourceWaitTimeout, match="waited 0s"):
        ensure_resources(cluster, [{"GPU": 1}], "1 GPU", 0, "igan train", lambda m: None,
                         sleep=clock.sleep, clock=clock)
    assert clock.slept == 0


# -- igan tune -------------------------------------------------------------------------------------
def test_tune_default_backend_runs_two_trials_on_two_cpus():
    lines, log = _lines()
    cluster = FakeCluster(LAPTOP, fixed=True)
    n = concurrency(TuneOptions(space="digits"), cluster, log)
    assert n == 2 and lines == [] and cluster.requests == []
    assert pack(trial_bundles(TuneOptions(space="digits")) * n, LAPTOP)  # what Ray is asked for really fits


def test_tune_caps_max_concurrent_this_machine_cannot_hold():
    lines, log = _lines()
    opts = TuneOptions(space="digits", max_concurrent=3)
    assert concurrency(opts, FakeCluster(LAPTOP, fixed=True), log) == 2
    assert len(lines) == 1 and "--max-concurrent 3, but the cluster can hold 2 trials" in lines[0]
    assert "1 CPU (driver 0.01 CPU + 1 worker x (0.99 CPU))" in lines[0] and "running 2 at once" in lines[0]


def test_tune_trial_larger_than_this_machine_is_refused():
    with pytest.raises(UserError, match="a trial: 4 CPU .* can never fit"):
        concurrency(TuneOptions(space="digits", cpus_per_trial=4.0), FakeCluster(LAPTOP, fixed=True), lambda m: None)


def test_tune_waits_for_gpu_trials_on_an_autoscaling_cluster():
    """--gpus-per-trial on a cluster with no GPU yet whose autoscaler has GPU nodes: ask for as many
    trials as it can hold (up to --num-samples), wait for the first, run them all at once."""
    cluster = FakeCluster([CPU_HEAD], ceiling={"CPU": 72.0, "GPU": 8.0}, joins={8: [GPU_NODE]})
    clock = Clock()
    lines, log = _lines()
    opts = TuneOptions(space="digits", num_samples=6, cpus_per_trial=4.0, gpus_per_trial=1.0)
    n = concurrency(opts, cluster, log, sleep=clock.sleep, clock=clock)
    assert n == 6
    assert len(cluster.requests[0]) == 6 * 2 and cluster.requests[-1] == []
    assert "waiting up to 10m00s for a trial: 1 GPU + 4 CPU" in lines[0]
    assert "6 trials at once; the cluster holds 4 now" in lines[-1]


def test_tune_on_a_cluster_that_may_grow_keeps_max_concurrent():
    """No published ceiling (nodes may join): the default is what the cluster holds now; a larger
    --max-concurrent is kept, saying that the other trials wait for nodes."""
    opts = dict(space="digits", num_samples=8, cpus_per_trial=4.0, gpus_per_trial=1.0)
    assert concurrency(TuneOptions(**opts), FakeCluster([CPU_HEAD, GPU_NODE]), lambda m: None) == 4
    lines, log = _lines()
    assert concurrency(TuneOptions(**opts, max_concurrent=8), FakeCluster([CPU_HEAD, GPU_NODE]), log) == 8
    assert lines == ["igan tune: 8 trials at once; the cluster holds 4 now, the others' workers wait for nodes "
                     "to join (Ray Train asks the autoscaler for them)"]


def test_tune_never_fits_on_an_autoscaler_without_gpus():
    cluster = FakeCluster([CPU_HEAD], ceiling={"CPU": 72.0})
    with pytest.raises(UserError, match="autoscaler node types add up to at most 0 GPU"):
        concurrency(TuneOptions(space="digits", gpus_per_trial=1.0), cluster, lambda m: None)
    assert cluster.requests == []


def test_tune_wait_is_bounded():
    cluster, clock = FakeCluster([CPU_HEAD]), Clock()
    with pytest.raises(ResourceWaitTimeout, match="waited 30s for a trial"):
        concurrency(TuneOptions(space="digits", gpus_per_trial=1.0, wait_for_resources=30), cluster, lambda m: None,
                    sleep=clock.sleep, clock=clock)


# -- the CLI on a real local Ray ---------------------------------------------------------------------
@pytest.mark.slow
def test_cli_refuses_gpus_this_ray_can_never_have(ray_local, digits_data, tmp_path, monkeypatch, capsys):
    """`igan train --gpus-per-worker 1` / `igan tune --gpus-per-trial 1` on a Ray started on this
    (GPU-less) machine: exit 2 at once with one line, before any MLflow run exists."""
    from pipelines.cli import main

    monkeypatch.setenv("IGAN_HOME", str(tmp_path / "home"))
    common = ["--data", digits_data, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
              "--storage", str(tmp_path / "ray")]
    rc = main(["train", "--gpus-per-worker", "1", *common])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("igan train: error: 1 worker x (1 GPU + 1 CPU) can never fit: this Ray was started "
                             "on this machine and has 0 GPU + 2 CPU"), err
    rc = main(["tune", "digits", "--gpus-per-trial", "1", *common])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("igan tune: error: a trial: 1 GPU + 1 CPU (driver 0.01 CPU + 1 worker x "
                             "(1 GPU + 0.99 CPU)) can never fit"), err
    assert not (tmp_path / "mlflow.db").exists()

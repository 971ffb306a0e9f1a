"""The measuring helpers of the benchmarks: benchmarks/cpu_by_process.py's per-process CPU shares
and benchmarks/ray_overhead.py's steady-state timer (its warm-up by steps and by seconds)."""
from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import time

import pytest
from helpers import REPO


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(str(REPO), "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cpu_by_process():
    return load("cpu_by_process")


def child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_busy_process_counts_about_one_core_and_a_sleeping_one_none(cpu_by_process):
    busy = child("import time\nend = time.time() + 20\nwhile time.time() < end: pass")
    idle = child("import time; time.sleep(20)")
    try:
        time.sleep(0.3)
        result = cpu_by_process.busiest(1.5, top=10_000)
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
    by_pid = {row["pid"]: row for row in result["processes"]}
    assert 0.3 < by_pid[busy.pid]["cores"] <= 1.1  # one thread: at most one core, less on a busy machine
    assert by_pid[idle.pid]["cores"] < 0.1
    assert "while time.time()" in by_pid[busy.pid]["command"]
    assert result["processes"] == sorted(result["processes"], key=lambda row: -row["cores"])
    assert result["total_cores"] >= by_pid[busy.pid]["cores"]


def test_top_limits_the_rows(cpu_by_process):
    assert len(cpu_by_process.busiest(0.1, top=3)["processes"]) == 3


@pytest.fixture(scope="module")
def ray_overhead():
    return load("ray_overhead")


def test_time_chunks_warms_up_for_steps_and_seconds_then_times_the_median_chunk(ray_overhead):
    seen: list[int] = []

    def run_chunk(chunk):  # 2 ms a step; the second timed chunk (10 steps) is 20x slower
        steps = list(chunk)
        seen.append(len(steps))
        slow = len(steps) == 10 and seen.count(10) == 2
        time.sleep(0.002 * len(steps) * (20 if slow else 1))

    batches = itertools.count()
    t0 = time.perf_counter()
    # warm-up: 5 steps, then chunks of 5 until 0.2 s have passed; then 3 timed chunks of 10 steps
    per_step = ray_overhead.time_chunks(run_chunk, batches, warmup=5, steps=30, chunks=3, warmup_s=0.2)
    assert time.perf_counter() - t0 >= 0.2
    assert seen[-3:] == [10, 10, 10]
    assert set(seen[:-3]) == {5} and len(seen[:-3]) >= 2  # more than the 5 steps: 0.2 s had not passed
    assert next(batches) == sum(seen)  # every step drew one batch, none lost
    assert 0.0015 < per_step < 0.01  # the median chunk's 2 ms a step, not the slow chunk's 40 ms


def test_time_chunks_without_warmup_seconds_warms_up_once(ray_overhead):
    seen: list[int] = []
    ray_overhead.time_chunks(lambda chunk: seen.append(len(list(chunk))), itertools.count(), 4, 8, 2)
    assert seen == [4, 4, 4]


@pytest.mark.parametrize("script, args", [("cpu_by_process", ["--window", "0"]), ("cpu_by_process", ["--top", "0"]),
                                          ("ray_overhead", ["--repeats", "0"]), ("ray_overhead", ["--models", "mnist"])])
def test_bad_arguments_end_in_one_error_line_and_exit_2(script, args):
    done = subprocess.run([sys.executable, os.path.join(str(REPO), "benchmarks", f"{script}.py"), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"{script}.py: error: ")
    assert done.stdout == ""

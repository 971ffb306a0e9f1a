"""benchmarks/memory_stream.py at tiny scale, in this process: its synthetic shard roots, one
worker of each variant and the summary (keeps the script from rotting; no memory thresholds)."""
from __future__ import annotations

import importlib.util
import os
import queue

import pytest
import torch
from helpers import REPO

ROOT = str(REPO)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("memory_stream", os.path.join(ROOT, "benchmarks", "memory_stream.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def roots(bench, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("memory_stream"))
    return {n: bench.shard_root(work, n, classes=4, samples_per_shard=100) for n in (200, 400)}


def test_shard_roots_are_imagenet_like_and_cached(bench, roots):
    m = bench.cached_manifest(roots[400])
    assert (m["num_samples"], m["num_classes"], m["image_size"], len(m["shards"])) == (400, 4, [128, 128], 4)
    assert m["dataset"] == "imagenet" and not m["skipped"]
    mtime = os.path.getmtime(os.path.join(roots[400], "train", "manifest.json"))
    assert bench.shard_root(os.path.dirname(roots[400]), 400, 4, 100) == roots[400]  # reused, not rewritten
    assert os.path.getmtime(os.path.join(roots[400], "train", "manifest.json")) == mtime
    assert not any(d.startswith("raw-") for d in os.listdir(os.path.dirname(roots[400])))  # tree removed


def test_workers_and_summary(bench, roots):
    # fewer init examples and a smaller VBN reference than the preset: seconds, not tens of seconds
    cfg = bench.bench_config(classes=4, batch_size=8, steps=2,
                             extra=["techniques.wn_init_examples=8", "techniques.vbn_reference_size=8"])
    assert cfg.data.labels_per_class == -1 and cfg.model.d_widths == [8, 16, 32, 32, 64]
    runs = {v: {} for v in bench.VARIANTS}
    for n, root in roots.items():
        runs["stream"][str(n)] = [bench.run_worker(root, 1, 2, "stream", cfg)]
        # the spawned child's wrapper, with an in-process queue and this process's thread count
        q = queue.Queue()
        bench._child(q, root, 0, 2, "whole_split", cfg.to_dict(), torch.get_num_threads())
        runs["whole_split"][str(n)] = [q.get_nowait()]
    for variant in bench.VARIANTS:
        for n in roots:
            (w,) = runs[variant][str(n)]
            assert "error" not in w, w.get("error")
            assert w["feed"] == "StreamFeed" and w["steps"] == 2 and w["variant"] == variant
            assert 0 < w["startup_mib"] <= w["feed_built_peak_mib"] <= w["peak_mib"]
            assert w["feed_built_mib"] <= w["feed_built_peak_mib"] and w["after_steps_mib"] <= w["peak_mib"]
    # the baseline holds every train image as float32 [3, 128, 128]
    assert runs["whole_split"]["400"][0]["whole_split_mib"] == round(400 * 3 * 128 * 128 * 4 / 2**20, 1)
    assert runs["stream"]["400"][0]["whole_split_mib"] == 0
    summary = bench.summarise(runs, [200, 400])
    assert summary["stream"]["ratio"] > 0 and summary["whole_split"]["ratio"] > 0
    assert summary["target_max_ratio"] == 1.1 and isinstance(summary["meets_target"], bool)


def test_skipped_baseline_size_is_projected(bench):
    runs = {"stream": {"1": [{"peak_mib": 10.0}], "2": [{"peak_mib": 10.5}, {"peak_mib": 11.0}]},
            "whole_split": {"1": [{"peak_mib": 12.0}], "2": "skipped: projected peak 9.0 GiB > ..."}}
    summary = bench.summarise(runs, [1, 2])
    assert summary["stream"] == {"peak_mib": {"1": 10.0, "2": 11.0}, "ratio": 1.1}
    assert summary["whole_split"]["ratio"] is None and summary["meets_target"] is True
    # stream's 11.0 at size 2 plus the measured excess (12 - 10) per image x 2 images
    assert summary["whole_split"]["projected_peak_mib"] == {"1": 12.0, "2": 15.0}
    assert summary["whole_split"]["projected_ratio"] == 1.25


def test_baseline_skip_rule(bench, roots):
    assert bench.whole_split_skip(roots[200], [{"peak_mib": 900.0}], 1, fraction=1.0) is None
    assert bench.whole_split_skip(roots[200], [{"peak_mib": 900.0}], 1, fraction=1e-6).startswith("skipped: ")
    # encoded bytes + uint8 + three float32 copies of every image
    pixels = 200 * 3 * 128 * 128
    assert 13 * pixels < bench.projected_whole_split_bytes(roots[200]) < 13 * pixels + 200 * 20_000


class _Gone:
    """A process that ended with ``exitcode`` (no result)."""

    def __init__(self, exitcode: int):
        self.exitcode = exitcode

    def join(self) -> None:
        pass


def test_collect_reports_processes_that_died_without_a_result(bench):
    q = queue.Queue()
    q.put({"rank": 0, "variant": "whole_split", "peak_mib": 1.0})
    got = bench.collect(q, {0: _Gone(0), 1: _Gone(-9), 2: _Gone(bench.RSS_CAP_EXIT)}, "whole_split", grace_s=0.01)
    by_rank = {r["rank"]: r for r in got}
    assert by_rank[0]["peak_mib"] == 1.0
    assert "OOM" in by_rank[1]["error"] and "RSS cap" in by_rank[2]["error"]
    assert bench.worst_peak(got) is None  # a failed rank: no figure for that size


def test_worker_rejects_unknown_variant(bench, roots):
    with pytest.raises(ValueError, match="variant"):
        bench.run_worker(roots[200], 0, 2, "mmap", bench.bench_config(4, 8, 2))

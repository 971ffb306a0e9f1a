"""The few things igan needs from Ray that Ray has no public API for, each in one place and checked
against Ray 2.60.0. Each answers "unknown" (or does nothing) when Ray changes, rather than failing."""
from __future__ import annotations

CHECKED_AGAINST = "2.60.0"


def autoscaler_max_resources() -> dict[str, float] | None:
    """The most of each resource the cluster's autoscaler node types can provide (node count x
    resources, summed), or None when the cluster publishes no node types. Ray Train 2.60 makes the
    same check before placing a worker group (``WorkerGroup._check_cluster_resources_and_raise_if_
    insufficient``) through ``ray._private.state.state.get_max_resources_from_cluster_config()``;
    Ray has no public API for it."""
    try:
        from ray._private.state import state

        found = state.get_max_resources_from_cluster_config()
    except Exception:  # not connected the usual way (ray:// client), or a Ray without it
        return None
    return {k: float(v) for k, v in found.items()} if found else None


def started_by_this_process() -> bool:
    """True when ``ray.init()`` in this process started the Ray it is connected to (a local,
    single-machine Ray), False when it connected to a running cluster that nodes may join. Ray
    2.60 records it as ``ray._private.worker._global_node.ray_init_cluster``; there is no public API."""
    try:
        import ray._private.worker as worker

        node = getattr(worker, "_global_node", None)
    except Exception:
        return False
    return bool(node is not None and getattr(node, "ray_init_cluster", False))


def replace_restored_callbacks(tuner, callbacks: list) -> bool:
    """Give a Tuner made by ``Tuner.restore`` this run's ``callbacks`` (``Tuner.restore`` keeps the
    first run's, and takes no new ones): Ray 2.60 holds them at ``tuner._local_tuner._run_config``.
    Returns whether they were replaced."""
    local = getattr(tuner, "_local_tuner", None)
    run_config = getattr(local, "_run_config", None)
    if run_config is None or not hasattr(run_config, "callbacks"):
        return False
    run_config.callbacks = list(callbacks)
    return True

"""How many Ray Train workers a training job gets and what each reserves, from ``igan train``'s
options and the nodes the cluster has (or will have, once the autoscaler adds them)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from pipelines.train import TrainOptions


def default_workers(cpus: float, gpus: float, gpus_per_worker: float) -> int:
    """Workers when ``--workers`` is not given: as many as the GPUs hold with ``--gpus-per-worker``
    (one while the cluster has none yet), else one using every core of a node. On CPUs one worker
    keeps the preset's batch size (each worker adds ``data.batch_size`` to the global batch) and
    reproduces the plain loop exactly."""
    if gpus_per_worker > 0 and gpus >= gpus_per_worker:
        return max(1, int(gpus // gpus_per_worker))
    return 1


def cpus_beside_gpus(nodes: list[dict], gpus_per_worker: float) -> float:
    """CPUs a GPU worker gets by default: the CPUs of a GPU node shared by the workers its GPUs
    hold, on the node with the fewest (at least 1; 1 while no node has GPUs). Counting the whole
    cluster's CPUs instead asks for CPUs that sit on other nodes (a CPU-only head), which no GPU
    node can give."""
    shares = [n.get("CPU", 0.0) // int(n["GPU"] // gpus_per_worker)
              for n in nodes if n.get("GPU", 0.0) >= gpus_per_worker]
    return max(1.0, min(shares)) if shares else 1.0


def worker_shape(opts: "TrainOptions", nodes: list[dict]) -> tuple[int, float]:
    """``(workers, cpus per worker)`` from the options and the nodes there are now."""
    cpus = sum(n.get("CPU", 0.0) for n in nodes) or 1.0
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    workers = opts.workers or default_workers(cpus, gpus, opts.gpus_per_worker)
    if opts.cpus_per_worker:
        return workers, opts.cpus_per_worker
    if opts.gpus_per_worker > 0:
        return workers, cpus_beside_gpus(nodes, opts.gpus_per_worker)
    node_cpus = max([n.get("CPU", 0.0) for n in nodes] or [cpus])
    return workers, max(1.0, min(float(int(cpus // workers)), node_cpus))


def worker_bundle(cpus: float, gpus: float) -> dict[str, float]:
    """The resources one Ray Train worker reserves."""
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def scaling(opts: "TrainOptions", cluster, log: Callable[[str], None] = print, **wait) -> tuple[int, float, int]:
    """``(workers, cpus_per_worker, torch threads)`` for the cluster seen through ``cluster`` (a
    :class:`pipelines.resources.ClusterView`). When the workers do not fit yet, asks the autoscaler
    and waits up to ``opts.wait_for_resources`` (``wait``: the ``sleep``/``clock`` of
    :func:`pipelines.resources.ensure_resources`). UserError when they can never fit,
    ResourceWaitTimeout when they did not come in time."""
    from pipelines.resources import describe, ensure_resources, pack

    workers, cpw = worker_shape(opts, cluster.nodes())
    bundle = worker_bundle(cpw, opts.gpus_per_worker)
    what = f"{workers} worker{'s' if workers > 1 else ''} x ({describe(bundle)})"
    waited = ensure_resources(cluster, [bundle] * workers, what, opts.wait_for_resources, "igan train", log, **wait)
    if waited and not opts.cpus_per_worker:  # the CPUs per worker of the nodes that came, if they fit
        _, grown = worker_shape(opts, cluster.nodes())
        if pack([worker_bundle(grown, opts.gpus_per_worker)] * workers, cluster.nodes()):
            cpw = grown
    threads = opts.threads or max(1, int(cpw))
    return workers, cpw, threads

"""What one trial reserves on the cluster and how many trials run at once."""
from __future__ import annotations

from typing import Callable

from pipelines.tune.options import TRIAL_DRIVER_CPUS, TuneOptions


def trial_worker_resources(cpus: float, gpus: float, workers: int) -> dict[str, float]:
    """What one Ray Train worker of a trial reserves: an equal share of the trial's CPUs left after
    its driver's (:data:`TRIAL_DRIVER_CPUS`) and of its GPUs."""
    return {"CPU": (cpus - TRIAL_DRIVER_CPUS) / workers, **({"GPU": gpus / workers} if gpus else {})}


def trial_bundles(opts: TuneOptions) -> list[dict[str, float]]:
    """Everything one trial reserves, one bundle per Ray actor: the local backend's trial process;
    or the train backend's driver and its workers. Either way they add up to ``--cpus-per-trial``
    and ``--gpus-per-trial``."""
    if opts.trial_backend == "local":
        return [{"CPU": opts.cpus_per_trial, **({"GPU": opts.gpus_per_trial} if opts.gpus_per_trial else {})}]
    w = opts.workers_per_trial
    return [{"CPU": TRIAL_DRIVER_CPUS}] + [trial_worker_resources(opts.cpus_per_trial, opts.gpus_per_trial, w)] * w


def describe_trial(opts: TuneOptions) -> str:
    """A trial's reservation in words, e.g. ``1 CPU (driver 0.01 CPU + 1 worker x (0.99 CPU))``."""
    from pipelines.resources import describe, total

    bundles = trial_bundles(opts)
    if opts.trial_backend == "local":
        return describe(bundles[0])
    w = opts.workers_per_trial
    return (f"{describe(total(bundles))} (driver {TRIAL_DRIVER_CPUS:g} CPU + {w} worker{'s' if w > 1 else ''} "
            f"x ({describe(bundles[1])}))")


def concurrency(opts: TuneOptions, cluster, log: Callable[[str], None] = print, **wait) -> int:
    """Trials at once: as many as the cluster can hold of what one trial reserves (its driver and
    workers, :func:`trial_bundles`), at most ``--max-concurrent`` and ``--num-samples``. A
    ``--max-concurrent`` the cluster can never hold is cut, saying why; on a cluster that may grow
    without a published limit it is kept. When not even one trial fits yet, asks the autoscaler and
    waits like ``igan train`` (``wait``: see :func:`pipelines.resources.ensure_resources`).
    UserError when no trial can ever fit, ResourceWaitTimeout when none fitted in time."""
    from pipelines.resources import copies_that_fit, ensure_resources

    one = trial_bundles(opts)
    limit = min(opts.max_concurrent or opts.num_samples, opts.num_samples)
    most = most_trials(cluster, one, limit)
    if most is not None:
        n = most
    elif opts.max_concurrent:  # a cluster that may grow: as many as asked
        n = limit
    else:  # as many as it holds once one fits (decided below)
        n = None
    ensure_resources(cluster, one, f"a trial: {describe_trial(opts)}", opts.wait_for_resources, "igan tune", log,
                     request=one * max(1, n or 1), **wait)
    if most is not None and opts.max_concurrent and most < limit:
        log(f"igan tune: --max-concurrent {opts.max_concurrent}, but the cluster can hold {most} trial"
            f"{'s' if most > 1 else ''} at once (each reserves {describe_trial(opts)}; the cluster has "
            f"{_capacity(cluster, one)}): running {most} at once")
    now = copies_that_fit(one, cluster.nodes(), limit)
    n = now if n is None else n
    if n > now:
        log(f"igan tune: {n} trials at once; the cluster holds {now} now, the others' workers wait for nodes "
            "to join (Ray Train asks the autoscaler for them)")
    return max(1, n)


def most_trials(cluster, one: list[dict], limit: int) -> int | None:
    """The most trials (``one`` trial's bundles each) the cluster can ever hold at once, at most
    ``limit``: what its nodes hold for a Ray started here, what its autoscaler's node types add up
    to where it publishes them; None when unknown (nodes may join)."""
    from pipelines.resources import copies_that_fit, copies_within

    if cluster.fixed():
        return copies_that_fit(one, cluster.nodes(), limit)
    ceiling = cluster.ceiling()
    return min(limit, copies_within(one, ceiling)) if ceiling is not None else None


def _capacity(cluster, bundles: list[dict]) -> str:
    """What the cluster has (a Ray started here) or can have (the autoscaler's ceiling) of the
    resources ``bundles`` use, e.g. ``2 CPU`` or ``at most 16 GPU + 384 CPU``."""
    from pipelines.resources import describe, total

    keys = [k for k in ("GPU", "CPU") if total(bundles).get(k)]
    if cluster.fixed():
        return describe(total(cluster.nodes()), keys)
    return "at most " + describe(cluster.ceiling() or {}, keys)

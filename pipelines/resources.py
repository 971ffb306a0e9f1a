"""What a job reserves on the Ray cluster, and whether the cluster has it now, can get it, or never will.

A job (``igan train``'s worker group, ``igan tune``'s concurrent trials) is a list of resource
bundles, one per Ray actor that reserves something. :func:`ensure_resources` decides before Ray is
asked to place them:

* they fit on the cluster's nodes now: go;
* they can never fit: the autoscaler's node types add up to less, or the cluster is a Ray that
  ``ray.init()`` started in this process (one machine: what it has is all it will have): a
  :class:`~pipelines.errors.UserError` at once (exit 2);
* otherwise ask the autoscaler for them (``ray.autoscaler.sdk.request_resources``) and wait, saying
  what for, up to ``--wait-for-resources`` seconds: :class:`~pipelines.errors.ResourceWaitTimeout`
  when they did not come (exit 1).

Without this, Ray Train waits for a worker group that cannot be placed by timing out and retrying
its start forever (``WorkerGroupStartupTimeoutError`` every 300 s), and ``igan train`` refused GPUs
on a cluster whose autoscaler had not started a GPU node yet.

The cluster is seen through a :class:`ClusterView`; :class:`RayCluster` is the live one, tests pass
their own.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Protocol

from pipelines.errors import ResourceWaitTimeout, UserError
from pipelines.ray_private import autoscaler_max_resources, started_by_this_process

#: Default of ``--wait-for-resources``: cloud GPU nodes typically take 3-10 minutes to join.
DEFAULT_WAIT_S = 600.0
#: Seconds between looks at the cluster while waiting (and re-sent autoscaler requests: another
#: client's ``request_resources`` replaces ours, so it is repeated).
POLL_S = 5.0
#: Seconds between "still waiting" lines.
REPORT_S = 60.0
_EPS = 1e-6  # Ray keeps resources in fixed point (1e-4): float sums such as 0.01 + 0.99 must still fit


class ClusterView(Protocol):
    """What the resource checks need to know about a Ray cluster."""

    def nodes(self) -> list[dict[str, float]]:
        """The total resources of each alive node."""

    def ceiling(self) -> dict[str, float] | None:
        """The most of each resource the autoscaler's node types can ever add up to; None when the
        cluster does not publish its node types."""

    def fixed(self) -> bool:
        """True when no node can ever join (a Ray started by ``ray.init()`` in this process)."""

    def request(self, bundles: list[dict[str, float]]) -> None:
        """Ask the autoscaler to make room for ``bundles`` (an empty list withdraws the request)."""


# -- bundles ------------------------------------------------------------------------------------------
def _fits(bundle: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(k, 0.0) + _EPS >= v for k, v in bundle.items() if v > 0)


def _size(bundle: dict[str, float]) -> tuple:
    return (bundle.get("GPU", 0.0), bundle.get("CPU", 0.0), sorted(bundle.items()))


def pack(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> bool:
    """True when every bundle fits on one node, no node giving more than it has (first fit,
    largest bundles first, the way Ray places a placement group's bundles)."""
    free = [dict(n) for n in nodes]
    for bundle in sorted(bundles, key=_size, reverse=True):
        node = next((f for f in free if _fits(bundle, f)), None)
        if node is None:
            return False
        for k, v in bundle.items():
            node[k] = node.get(k, 0.0) - v
    return True


def copies_that_fit(bundles: list[dict[str, float]], nodes: list[dict[str, float]], limit: int) -> int:
    """How many copies of ``bundles`` (e.g. one trial's driver and workers) the nodes hold at once,
    at most ``limit``."""
    n = 0
    while n < limit and pack(bundles * (n + 1), nodes):
        n += 1
    return n


def copies_within(bundles: list[dict[str, float]], totals: dict[str, float]) -> int:
    """How many copies of ``bundles`` the resource ``totals`` (e.g. the autoscaler's ceiling) hold,
    counting sums only (the ceiling has no per-node shape)."""
    need = total(bundles)
    counts = [math.floor((totals.get(k, 0.0) + _EPS) / v) for k, v in need.items() if v > 0]
    return min(counts) if counts else 0


def total(bundles: list[dict[str, float]]) -> dict[str, float]:
    """The bundles' resources added up."""
    out: dict[str, float] = {}
    for bundle in bundles:
        for k, v in bundle.items():
            out[k] = out.get(k, 0.0) + v
    return out


def describe(resources: dict[str, float], keys: list[str] | None = None) -> str:
    """``{"GPU": 1, "CPU": 0.99}`` as ``1 GPU + 0.99 CPU`` (GPU first; ``keys`` picks and orders)."""
    if keys is None:
        keys = sorted(resources, key=lambda k: (k != "GPU", k != "CPU", k))
    return " + ".join(f"{resources.get(k, 0.0):g} {k}" for k in keys) or "nothing"


def _have(nodes: list[dict[str, float]], need: dict[str, float]) -> str:
    """What the cluster has of the resources ``need`` names, e.g. ``0 GPU + 2 CPU``."""
    keys = [k for k in sorted(need, key=lambda k: (k != "GPU", k != "CPU", k)) if need[k] > 0]
    return describe(total(nodes), keys)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


# -- the decision and the wait -----------------------------------------------------------------------
def never_reason(view: ClusterView, bundles: list[dict[str, float]]) -> str | None:
    """Why ``bundles`` can never fit on this cluster (one line), or None when they might."""
    need = total(bundles)
    ceiling = view.ceiling()
    if ceiling is not None and copies_within(bundles, ceiling) < 1:
        return f"the cluster's autoscaler node types add up to at most {_have([ceiling], need)}"
    if view.fixed() and not pack(bundles, view.nodes()):
        return (f"this Ray was started on this machine and has {_have(view.nodes(), need)} "
                "(run on a cluster that has them with --address or $RAY_ADDRESS)")
    return None


def ensure_resources(view: ClusterView, bundles: list[dict[str, float]], what: str, wait_s: float,
                     prog: str, log: Callable[[str], None] = print, *,
                     request: list[dict[str, float]] | None = None,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> bool:
    """Make sure the cluster holds ``bundles`` (``what`` says them in words); returns False when
    they fit at once, True when they fit after waiting for nodes. UserError when they can never
    fit; otherwise asks the autoscaler for ``request`` (default ``bundles``) and waits up to
    ``wait_s`` seconds, printing what it waits for; ResourceWaitTimeout when they did not come. The
    request is withdrawn on return: from then on Ray Train asks the autoscaler for its own worker
    groups, and an idle cluster may shrink again."""
    if pack(bundles, view.nodes()):
        return False
    reason = never_reason(view, bundles)
    if reason is not None:
        raise UserError(f"{what} can never fit: {reason}")
    need = total(bundles)
    start = last_report = clock()
    deadline = start + max(0.0, wait_s)
    try:
        _ask(view, request or bundles, prog, log)
        log(f"{prog}: waiting up to {_clock(wait_s)} for {what} (the cluster has {_have(view.nodes(), need)} "
            "now); asked the autoscaler for them (--wait-for-resources sets the wait)")
        while True:
            nodes = view.nodes()
            if pack(bundles, nodes):
                log(f"{prog}: the cluster has room for {what} after {_clock(clock() - start)}")
                return True
            now = clock()
            if now >= deadline:
                raise ResourceWaitTimeout(
                    f"waited {_clock(now - start)} for {what}, but the cluster still has {_have(nodes, need)}; "
                    "no node with them joined (`ray status` shows what the autoscaler is doing); "
                    "raise --wait-for-resources or ask for less")
            if now - last_report >= REPORT_S:
                log(f"{prog}: still waiting for {what} ({_clock(now - start)}): the cluster has {_have(nodes, need)}")
                last_report = now
            sleep(min(POLL_S, max(0.0, deadline - now)))
            _ask(view, request or bundles, prog, log)  # again: another client's request replaces ours
    finally:
        _ask(view, [], prog, log)


def _ask(view: ClusterView, bundles: list[dict[str, float]], prog: str, log) -> None:
    """Send (or withdraw) the autoscaler request; a cluster that cannot take one is only waited on."""
    try:
        view.request(bundles)
    except Exception as exc:  # e.g. a ray:// client session: waiting still works, asking does not
        if bundles:
            log(f"{prog}: could not ask the autoscaler ({type(exc).__name__}); waiting for nodes to join")


# -- the live cluster ---------------------------------------------------------------------------------
class RayCluster:
    """:class:`ClusterView` of the cluster ``ray`` is connected to."""

    def __init__(self, ray):
        self.ray = ray

    def nodes(self) -> list[dict[str, float]]:
        """The total resources of each alive node (``ray.nodes()``)."""
        return [{k: float(v) for k, v in (n.get("Resources") or {}).items()}
                for n in self.ray.nodes() if n.get("Alive")]

    def ceiling(self) -> dict[str, float] | None:
        """The autoscaler's maximum per resource, or None (see :func:`autoscaler_max_resources`)."""
        return autoscaler_max_resources()

    def fixed(self) -> bool:
        """True for a Ray that ``ray.init()`` started in this process (see :func:`started_by_this_process`)."""
        return started_by_this_process()

    def request(self, bundles: list[dict[str, float]]) -> None:
        """``ray.autoscaler.sdk.request_resources(bundles=...)``."""
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[dict(b) for b in bundles])


__all__ = ["ClusterView", "RayCluster", "ensure_resources", "never_reason", "pack", "copies_that_fit",
           "copies_within", "total", "describe", "DEFAULT_WAIT_S"]

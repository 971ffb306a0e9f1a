"""What the ranks of a data-parallel run agree on, with ``torch.distributed`` collectives: whether a
rank hit an error, where an epoch stops, mean losses and sums. Every function here is a collective
when ``world`` > 1 (every rank calls it at the same point) and a plain computation otherwise, so
the one training loop (:mod:`igan.loop`) runs unchanged on one process and on many.

A data error (:class:`~igan.data.manifest.ShardDataError`) is permanent and must not leave a rank
waiting in a collective: the ranks settle it together and each raises :class:`AgreedDataError`.
"""
from __future__ import annotations

from typing import Any

import torch

from igan.data.manifest import ShardDataError

#: A rank's batches ran out.
END = ("end", "")


class AgreedDataError(ShardDataError):
    """A data error every rank raises at the same point (they agreed on it through a collective),
    so every worker can stop without a rank hanging in DDP; the message is one line."""


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def data_error_reason(exc: BaseException) -> str:
    """The one-line message of a ShardDataError (one re-raised by a DataLoader worker carries the
    worker's traceback: its last line is the error)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    return lines[-1].split("Error: ", 1)[-1]


def gather_if_any(state: Any, device: torch.device, world: int) -> list | None:
    """None when ``state`` is None on every rank, else every rank's state in rank order (objects are
    gathered only then: one all-reduce of one number in the common case)."""
    if world == 1:
        return None if state is None else [state]
    import torch.distributed as dist

    flag = torch.tensor([0.0 if state is None else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() == 0:
        return None
    states: list = [None] * world
    dist.all_gather_object(states, state)
    return states


def agree_on_error(error: str | None, device: torch.device, world: int) -> str | None:
    """The first rank's error message when any rank has one, else None (the same on every rank)."""
    errors = gather_if_any(error, device, world)
    return None if errors is None else next(e for e in errors if e is not None)


def raise_agreed(error: str | None, device: torch.device, world: int) -> None:
    """Raise AgreedDataError on every rank when ``error`` is set on any."""
    failure = agree_on_error(error, device, world)
    if failure is not None:
        raise AgreedDataError(failure)


def settle(stop: tuple[str, str] | None, device: torch.device, world: int, step: int) -> tuple[str, str] | None:
    """The stop every rank takes given each rank's own ``stop`` (None: go on; :data:`END`; or
    ``(kind, reason)``): the first rank's error, the end when every rank is at its end, else a
    data error (a rank whose batches ran out while others had more would leave them waiting in
    DDP). One all-reduce of two numbers per step; messages are gathered only on an error."""
    if world == 1:
        return stop
    import torch.distributed as dist

    code = 0 if stop is None else 1 if stop == END else 2
    t = torch.tensor([code, -code], dtype=torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    high, low = int(t[0].item()), -int(t[1].item())
    if high == 0:
        return None
    if high == 1 and low == 1:
        return END
    states: list = [None] * world
    dist.all_gather_object(states, stop)
    errors = [s for s in states if s is not None and s != END]
    if errors:
        return errors[0]
    short = [r for r, s in enumerate(states) if s == END]
    return ("data", f"rank {short[0]}'s batches ran out after {step} steps while other ranks had more "
                    "(the shards hold other counts than their manifest says)")


def mean_over_ranks(values: dict[str, float], device: torch.device, world: int) -> dict[str, float]:
    """``values`` averaged over the ranks (same keys, in the same order, on every rank)."""
    if world == 1 or not values:
        return values
    import torch.distributed as dist

    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / world).tolist()))


def sum_over_ranks(values: list[float], device: torch.device, world: int) -> list[float]:
    """Element-wise sum of ``values`` over the ranks."""
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_to_rank0(part: torch.Tensor, world: int, rank: int) -> torch.Tensor | None:
    """Every rank's ``part`` concatenated in rank order on rank 0 (None on the others)."""
    if world == 1:
        return part
    import torch.distributed as dist

    parts = [None] * world if rank == 0 else None
    dist.gather_object(part, parts, dst=0)
    return torch.cat([p for p in parts if len(p)]) if rank == 0 else None


def all_gather(obj: Any, world: int) -> list:
    """Every rank's ``obj`` in rank order."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * world
    dist.all_gather_object(out, obj)
    return out

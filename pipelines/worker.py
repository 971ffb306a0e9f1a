"""The training loop of one Ray Train worker: igan's :class:`~igan.trainer.Trainer` with G and D
under DDP, fed this rank's batches, evaluated every ``eval.every`` epochs and checkpointed through
Ray Train every ``train.checkpoint_every`` epochs and at the end.

Rank 0 sends one event per epoch (losses, metrics, a sample grid) to the driver through a Ray
queue (``events``); the driver prints progress and logs to MLflow, so workers need no MLflow access.
Events: ``start`` (also each restart of the worker group: ``epochs_done``, ``nodes`` = every rank's Ray
node id), ``epoch``, ``nonfinite`` (the run stopped on a NaN/inf loss), ``data_error`` (the run
stopped on a :class:`~igan.data.manifest.ShardDataError`), ``done``.

Data errors are permanent (a shard that contradicts its manifest does not heal on a retry), so
they do not go to Ray Train as a worker failure, which it would retry ``max_failures`` times:
the ranks agree on the error at a point they all reach (after opening the data; before each
step; after reading an evaluation split), so no rank is left waiting in a collective, and then
every worker returns normally after rank 0 sent ``data_error``. A ShardDataError raised anywhere
else still fails the worker the usual way (retried, but never a hang).

Checkpoints: a folder with ``state.pt`` (rank 0's :meth:`Trainer.state_dict`), ``meta.json``
(epochs done, step, MLflow run id, last metrics), ``config.yaml``, and ``rng-rank<R>.pt`` from every
rank (Ray Train merges the ranks' folders), so a restart continues every rank's noise exactly.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from igan.checkpoint import read_state
from igan.config import Config, dump_yaml
from igan.data.feed import EVAL_BATCH, domain_training_data, load_test_role, make_feed
from igan.data.manifest import ShardDataError
from igan.evaluation import SAMPLE_SEED_OFFSET
from igan.trainer import NonFiniteLossError, Trainer

FAIL_ONCE_ENV = "IGAN_TEST_FAIL_ONCE"  # "RANK:EPOCH" (EPOCH 1-based, as printed): test-only crash
HOLD_ENV = "IGAN_TEST_HOLD"  # "EPOCH:PATH": test-only, every rank waits at the start of EPOCH until PATH exists
STATE, META, CONFIG, RANK_RNG = "state.pt", "meta.json", "config.yaml", "rng-rank{}.pt"


class AgreedDataError(ShardDataError):
    """A data error every rank raises at the same point (they agreed on it through a collective),
    so every worker can stop without a rank hanging in DDP; the message is one line."""


# -- entry point -------------------------------------------------------------------------------
def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The function Ray Train runs on every worker. ``loop_config``: ``config`` (Config dict),
    ``data_root`` (shard root or None for the embedded toy sets), ``run_id``, ``events`` (a
    ``ray.util.queue.Queue`` or None: print instead), ``threads`` (torch threads, 0: leave),
    ``fail_once`` (``"RANK:EPOCH"`` or None) and ``fail_marker`` (file marking it done), ``hold``
    (``"EPOCH:PATH"`` or None, see :func:`maybe_hold`), ``report_every_epoch`` (report metrics to Ray
    Train after every epoch, e.g. for Tune)."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if loop_config.get("threads"):
        torch.set_num_threads(int(loop_config["threads"]))
    cfg = Config.from_dict(loop_config["config"])
    events = Events(loop_config.get("events") if rank == 0 else None, enabled=rank == 0)
    try:
        feed, evaluator, init_batch = open_data(cfg, loop_config.get("data_root"), rank, world)
        trainer, done = build(cfg, init_batch, rank, world)
        events.send("start", epochs_done=done, step=trainer.step, steps_per_epoch=len(feed), world_size=world,
                    epochs=cfg.train.epochs, nodes=node_ids(world), placement_group=_placement_group())
        train_epochs(trainer, feed, evaluator, cfg, done, rank, world, events, loop_config)
    except AgreedDataError as exc:  # every rank is here: end without an exception, so it is not retried
        events.send("data_error", reason=str(exc))


def open_data(cfg: Config, data_root: str | None, rank: int, world: int):
    """``(feed, evaluator, init batch)`` of this rank: every read of the data before training (the
    feed's pass over the split, the scorer's training data, the initialisation batch).
    AgreedDataError on every rank when it failed on any with a ShardDataError; a collective
    when ``world`` > 1, before any other."""
    import ray.train.torch

    feed = evaluator = init_batch = None
    failure = None
    try:
        feed = make_feed(cfg, data_root, rank, world)
        # The evaluator before the Trainer: training a domain classifier draws from torch's global
        # RNG, which the Trainer seeds when it is built, so the run does not depend on whether the
        # scorer was cached.
        evaluator = Evaluator(cfg, data_root, rank, world, feed.validation)
        init_batch = feed.init_batch()
    except ShardDataError as exc:
        failure = data_error_reason(exc)
    if world > 1:
        failure = _agree_on_error(failure, ray.train.torch.get_device())
    if failure is not None:
        raise AgreedDataError(failure)
    return feed, evaluator, init_batch


def data_error_reason(exc: BaseException) -> str:
    """The one-line message of a ShardDataError (one re-raised by a DataLoader worker carries the
    worker's traceback: its last line is the error)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    return lines[-1].split("Error: ", 1)[-1]


def build(cfg: Config, init_batch: torch.Tensor | None, rank: int, world: int) -> tuple[Trainer, int]:
    """This rank's Trainer (under DDP when ``world`` > 1), initialised from ``init_batch`` (the
    feed's) and restored from Ray Train's latest checkpoint when there is one. Returns
    ``(trainer, epochs_done)``."""
    import ray.train.torch

    device = ray.train.torch.get_device()
    trainer = Trainer(cfg, init_batch=init_batch, device=device, wrap=_wrapper(world))
    done = restore(trainer, cfg, rank)
    if done is None:
        seed_rank(trainer, cfg, rank)
        done = 0
    return trainer, done


def node_ids(world: int) -> list[str]:
    """The Ray node id of every rank, in rank order (a collective when ``world`` > 1)."""
    import ray

    mine = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    if world == 1:
        return [mine]
    import torch.distributed as dist

    ids: list = [None] * world
    dist.all_gather_object(ids, mine)
    return ids


def _placement_group():
    """The placement group this worker group runs in (None outside one): a Tune trial that is stopped
    while its TorchTrainer still runs removes it, or its resources would stay reserved."""
    import ray.util

    return ray.util.get_current_placement_group() if ray.is_initialized() else None


def _wrapper(world: int):
    """``prepare_model`` (DDP when ``world`` > 1). Buffers are not broadcast on every forward: the
    only ones are G's batch-norm running statistics (used only to generate in eval mode) and VBN's
    fixed reference noise (identical on all ranks from the start)."""
    import ray.train.torch

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"broadcast_buffers": False})
    return wrap


def seed_rank(trainer: Trainer, cfg: Config, rank: int, salt: int = 0) -> None:
    """Give rank ``rank`` > 0 its own noise streams (latent z, dropout and Gaussian noise); rank 0
    keeps the Trainer's, so one worker reproduces the plain loop."""
    if rank == 0 and salt == 0:
        return
    base = cfg.train.seed * 1_000_003 + 7919 * rank + 104_729 * salt
    trainer.noise.manual_seed(base + 1)
    torch.manual_seed(base + 2)


# -- the loop ------------------------------------------------------------------------------------
def train_epochs(trainer: Trainer, feed, evaluator: "Evaluator", cfg: Config, done: int, rank: int, world: int,
                 events: "Events", loop_config: dict) -> None:
    """Epochs ``done..train.epochs-1``: train, evaluate when due, send the epoch event, checkpoint
    when due. Stops (without a checkpoint) on a non-finite loss on any rank; a data error on any
    rank raises AgreedDataError on every rank (see :func:`run_epoch`, :meth:`Evaluator.ssl_error`)."""
    t0, metrics = time.perf_counter(), {}
    for epoch in range(done, cfg.train.epochs):
        maybe_fail(loop_config.get("fail_once"), loop_config.get("fail_marker"), rank, epoch)
        maybe_hold(loop_config.get("hold"), epoch)
        trainer.set_epoch(epoch)
        batches = feed.epoch(epoch)
        if rank == 0 and str(epoch + 1) == str(loop_config.get("nonfinite_epoch")):
            batches = _poisoned(batches)
        losses, error = run_epoch(trainer, batches, world)
        if error is not None:
            events.send("nonfinite", reason=error, epoch=epoch + 1, step=trainer.step)
            return
        last = epoch + 1 == cfg.train.epochs
        metrics, grid = epoch_metrics(evaluator, trainer, cfg, epoch, losses)
        events.send("epoch", epoch=epoch + 1, step=trainer.step, metrics=metrics, grid=grid,
                    elapsed=time.perf_counter() - t0)
        if (epoch + 1) % cfg.train.checkpoint_every == 0 or last:
            save_checkpoint(trainer, cfg, epoch + 1, rank, loop_config.get("run_id"), metrics)
        elif loop_config.get("report_every_epoch"):
            import ray.train

            ray.train.report({"epoch": epoch + 1, "step": trainer.step, **metrics})
    events.send("done", step=trainer.step, epochs_done=cfg.train.epochs, metrics=metrics)


def run_epoch(trainer: Trainer, batches, world: int) -> tuple[dict[str, float], str | None]:
    """One epoch of this rank's ``batches``. Returns ``(losses averaged over steps and ranks,
    None)``, or ``({}, reason)`` when a loss became non-finite on any rank. Raises AgreedDataError
    on every rank when reading a batch failed with a ShardDataError on any rank, or when the ranks'
    batches ran out at different steps. Either way all ranks stop at the same step: one collective
    per step settles the last step's loss and the next batch's read together."""
    sums: dict[str, float] = {}
    count = 0
    stream = iter(batches)
    batch, stop = _fetch(stream)
    while True:
        if world > 1:
            stop = _settle(stop, trainer.device, count)
        if stop is not None:
            break
        try:
            logs = trainer.train_step(*batch)
        except NonFiniteLossError as exc:
            stop = ("nonfinite", f"rank {_rank()}: {exc}")
            continue
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        batch, stop = _fetch(stream)
    kind, reason = stop
    if kind == "data":
        raise AgreedDataError(reason)
    if kind == "nonfinite":
        return {}, reason
    means = {k: v / max(count, 1) for k, v in sorted(sums.items())}
    if world > 1 and means:
        import torch.distributed as dist

        t = torch.tensor(list(means.values()), dtype=torch.float64, device=trainer.device)
        dist.all_reduce(t)
        means = dict(zip(means, (t / world).tolist()))
    return means, None


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


_END = ("end", "")


def _fetch(stream) -> tuple[Any, tuple[str, str] | None]:
    """``(next batch, None)``, ``(None, ("end", ""))`` at the end, or ``(None, ("data", reason))``
    when reading it raised a ShardDataError."""
    try:
        return next(stream), None
    except StopIteration:
        return None, _END
    except ShardDataError as exc:
        return None, ("data", f"rank {_rank()}: {data_error_reason(exc)}")


def _settle(stop: tuple[str, str] | None, device: torch.device, step: int) -> tuple[str, str] | None:
    """Collective: the stop every rank takes given each rank's own ``stop`` (None: go on) — the
    first rank's error, the end when every rank is at its end, else a data error (a rank whose
    batches ran out while others had more would leave them waiting in DDP). One all-reduce of two
    numbers per step; the ranks' messages are gathered only when one of them has an error."""
    import torch.distributed as dist

    code = 0 if stop is None else 1 if stop == _END else 2
    t = torch.tensor([code, -code], dtype=torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    high, low = (int(v) for v in t.tolist())
    low = -low
    if high == 0:
        return None
    if high == 1 and low == 1:
        return _END
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, stop)
    errors = [s for s in states if s is not None and s != _END]
    if errors:
        return errors[0]
    short = [r for r, s in enumerate(states) if s == _END]
    return ("data", f"rank {short[0]}'s batches ran out after {step} steps while other ranks had more "
                    "(the shards hold other counts than their manifest says)")


def _gather_if_any(state: Any, device: torch.device) -> list | None:
    """Collective: None when ``state`` is None on every rank, else every rank's state in rank order."""
    import torch.distributed as dist

    flag = torch.tensor([0.0 if state is None else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() == 0:
        return None
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def _agree_on_error(error: str | None, device: torch.device) -> str | None:
    """Collective: every rank learns whether any rank hit a non-finite loss, and its message."""
    errors = _gather_if_any(error, device)
    return None if errors is None else next(e for e in errors if e is not None)


def _poisoned(batches):
    """Test-only (``IGAN_TEST_NONFINITE``): the epoch's first batch with NaN images."""
    for i, batch in enumerate(batches):
        yield batch._replace(x_unl=torch.full_like(batch.x_unl, float("nan"))) if i == 0 else batch


def maybe_fail(spec: str | None, marker: str | None, rank: int, epoch: int) -> None:
    """Test-only fault injection: raise once when ``spec`` = ``"RANK:EPOCH"`` matches this rank at
    the start of that (1-based) epoch and ``marker`` does not exist yet (it is created first)."""
    if not spec or not marker:
        return
    want_rank, want_epoch = (int(v) for v in spec.split(":"))
    if rank != want_rank or epoch + 1 != want_epoch or os.path.exists(marker):
        return
    Path(marker).parent.mkdir(parents=True, exist_ok=True)
    Path(marker).write_text(f"rank {rank} epoch {epoch + 1}\n")
    raise RuntimeError(f"{FAIL_ONCE_ENV}: injected failure on rank {rank} at the start of epoch {epoch + 1}")


def maybe_hold(spec: str | None, epoch: int, poll: float = 0.2) -> None:
    """Test-only (``IGAN_TEST_HOLD``): with ``spec`` = ``"EPOCH:PATH"``, wait at the start of that
    (1-based) epoch until the file PATH exists, so a test can act (e.g. take a node away) while the
    job is known to be mid-run with a checkpoint behind it."""
    if not spec:
        return
    want, path = spec.split(":", 1)
    if epoch + 1 != int(want):
        return
    while not os.path.exists(path):
        time.sleep(poll)


# -- evaluation ----------------------------------------------------------------------------------
class Evaluator:
    """Evaluation shared by all ranks, by role (:mod:`igan.evaluation`): ``val`` on the ranks' parts
    of the feed's validation hold-out, ``test`` on their parts of ``data.test_split`` (read only when
    the test evaluation runs, at the end); samples generated on every rank and scored on rank 0; the
    sample grid (validation only) on rank 0."""

    def __init__(self, cfg: Config, data_root: str | None, rank: int, world: int, validation=None):
        from igan.evaluation import TOY_SETS, make_scorer, scorer_kind

        self.cfg, self.rank, self.world, self.root = cfg, rank, world, data_root
        self.data = {"val": validation.part(rank, world) if validation is not None and len(validation) else None,
                     "test": None}
        self.wants_samples = cfg.data.dataset in TOY_SETS or scorer_kind(cfg) != "none"
        self.scorer = None
        if rank == 0 and scorer_kind(cfg) != "none":
            train = domain_training_data(cfg, data_root) if scorer_kind(cfg) == "domain" else None
            self.scorer = make_scorer(cfg, train=train)

    def _has_role(self, role: str) -> bool:
        """Whether ``role`` has data to score (the same answer on every rank: it depends on the
        config and the hold-out's size only)."""
        return role == "test" or self.data["val"] is not None

    def _role_data(self, role: str):
        if role == "test" and self.data["test"] is None and self.cfg.techniques.semi_supervised:
            self.data["test"] = load_test_role(self.cfg, self.root, self.rank, self.world)
        return self.data[role]

    def ssl_error(self, trainer: Trainer, data) -> float:
        """Error (fraction) of the EMA classifier over every rank's part of ``data`` (``data``
        may be a callable returning it: read under the same guard). AgreedDataError on every rank
        when reading it failed on any rank with a ShardDataError (a streamed split is read here)."""
        wrong = total = 0
        failure = None
        try:
            for x, y in (data() if callable(data) else data).batches(EVAL_BATCH):
                wrong += int((trainer.classify(x).argmax(1) != y).sum())
                total += len(y)
        except ShardDataError as exc:
            failure = f"rank {self.rank}: {data_error_reason(exc)}"
        if self.world > 1:
            failure = _agree_on_error(failure, trainer.device)
        if failure is not None:
            raise AgreedDataError(failure)
        if self.world > 1:
            import torch.distributed as dist

            t = torch.tensor([wrong, total], dtype=torch.float64, device=trainer.device)
            dist.all_reduce(t)
            wrong, total = t.tolist()
        return float(wrong) / max(float(total), 1.0)

    def samples(self, trainer: Trainer, role: str) -> torch.Tensor | None:
        """``eval.num_samples`` samples of ``role``'s seed generated across the ranks, gathered on
        rank 0 (None elsewhere)."""
        n = self.cfg.eval.num_samples
        share = -(-n // self.world)
        mine = trainer.generate(min(share, max(0, n - self.rank * share)),
                                seed=self.cfg.train.seed + SAMPLE_SEED_OFFSET[role] + 7919 * self.rank)
        if self.world == 1:
            return mine
        import torch.distributed as dist

        parts = [None] * self.world if self.rank == 0 else None
        dist.gather_object(mine, parts, dst=0)
        return torch.cat([p for p in parts if len(p)]) if self.rank == 0 else None

    def evaluate(self, trainer: Trainer, role: str = "val") -> tuple[dict[str, float], Any]:
        """``(metrics named <role>_*, grid)``: metrics on every rank (scores only on rank 0); the
        sample grid (``uint8 [H, W, 3]``) on rank 0 for ``val``, None otherwise."""
        from igan.evaluation import role_metrics, sample_grid, score_samples

        out: dict[str, float] = {}
        if self.cfg.techniques.semi_supervised and self._has_role(role):
            out["ssl_error"] = self.ssl_error(trainer, lambda: self._role_data(role))
        samples = self.samples(trainer, role) if self.wants_samples else None
        grid = None
        if self.rank == 0:
            if samples is not None:
                out.update(score_samples(samples, self.cfg, self.scorer))
            if role == "val" and samples is not None and samples.dim() == 2:  # toy points: all of them
                grid = sample_grid(samples, self.cfg)
            elif role == "val":
                side = self.cfg.eval.grid_size
                grid = sample_grid(trainer.generate(side * side, seed=self.cfg.train.seed + SAMPLE_SEED_OFFSET["val"]),
                                   self.cfg)
        return role_metrics(role, out), grid


def epoch_metrics(evaluator: Evaluator, trainer: Trainer, cfg: Config, epoch: int,
                  losses: dict[str, float]) -> tuple[dict[str, float], Any]:
    """``(metrics, grid)`` after 0-based ``epoch``: the losses, the validation metrics when an
    evaluation is due (every ``eval.every`` epochs and the last), and the test metrics after the
    last epoch only. A collective when the world size is above 1: every rank calls it."""
    metrics, grid = dict(losses), None
    last = epoch + 1 == cfg.train.epochs
    if (epoch + 1) % cfg.eval.every == 0 or last:
        scores, grid = evaluator.evaluate(trainer, "val")
        metrics.update(scores)
    if last:
        metrics.update(evaluator.evaluate(trainer, "test")[0])
    return metrics, grid


# -- checkpoints ---------------------------------------------------------------------------------
def _rng_state(trainer: Trainer) -> dict:
    state = {"torch": torch.get_rng_state(), "noise": trainer.noise.get_state()}
    if trainer.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(trainer.device)
    return state


def _set_rng_state(trainer: Trainer, state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    trainer.noise.set_state(state["noise"].cpu())
    if "cuda" in state and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), trainer.device)


def save_checkpoint(trainer: Trainer, cfg: Config, epochs_done: int, rank: int, run_id: str | None,
                    metrics: dict[str, float]) -> None:
    """Report a checkpoint to Ray Train (a collective: every rank calls it)."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        torch.save(_rng_state(trainer), d / RANK_RNG.format(rank))
        if rank == 0:
            torch.save(trainer.state_dict(), d / STATE)
            (d / META).write_text(json.dumps({"epochs_done": epochs_done, "step": trainer.step, "run_id": run_id,
                                              "metrics": metrics, "preset": cfg.preset}))
            (d / CONFIG).write_text(dump_yaml(cfg))
        ray.train.report({"epoch": epochs_done, "step": trainer.step, **metrics},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp))


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """``(state, meta)`` of a checkpoint folder (local path). ``state.pt`` is read without running
    code (:func:`igan.checkpoint.read_state`: CheckpointError, one line, for a file holding more than
    tensors and plain values)."""
    path = Path(path)
    return read_state(path / STATE), json.loads((path / META).read_text())


def read_rank_rng(path: str | Path, rank: int) -> dict | None:
    """Rank ``rank``'s RNG state saved in checkpoint folder ``path`` (read like ``state.pt``), or
    None when that rank saved none (the world size changed)."""
    rng_file = Path(path) / RANK_RNG.format(rank)
    return read_state(rng_file) if rng_file.exists() else None


def restore(trainer: Trainer, cfg: Config, rank: int) -> int | None:
    """Load Ray Train's latest checkpoint into ``trainer`` (and this rank's noise state); returns the
    epochs done, or None when the run starts fresh."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        state, meta = read_checkpoint(d)
        rng = read_rank_rng(d, rank)
    trainer.load_state_dict(state)
    done = int(meta["epochs_done"])
    if rng is not None:
        _set_rng_state(trainer, rng)
    else:  # the world size changed: a fresh, distinct stream per rank
        seed_rank(trainer, cfg, rank, salt=done + 1)
    return done


# -- events to the driver ------------------------------------------------------------------------
class Events:
    """Rank 0's messages to the driver: put on a Ray queue, or printed when there is none."""

    def __init__(self, queue, enabled: bool):
        self.queue, self.enabled = queue, enabled

    def send(self, kind: str, **fields) -> None:
        if not self.enabled:
            return
        event = {"kind": kind, **fields}
        if self.queue is not None:
            self.queue.put(event)
        else:
            shown = {k: v for k, v in event.items() if k != "grid"}
            print(f"igan worker: {shown}", flush=True)

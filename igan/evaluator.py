"""Scheduled evaluation during training, on one rank or many: the validation role every
``eval.every`` epochs and after the last, the test role once after the last (metric names and
seeds per role: :mod:`igan.evaluation`).

Every rank scores its part of a role's labelled data and generates its share of the samples;
rank 0 gathers the samples, scores them and draws the sample grid. Reading a streamed split may
raise a data error on any rank: the ranks agree on it (:func:`igan.distributed.raise_agreed`).
"""
from __future__ import annotations

from typing import Any

import torch

from igan.config import Config
from igan.data.feed import EVAL_BATCH, domain_training_data, load_test_role
from igan.data.manifest import ShardDataError
from igan.distributed import data_error_reason, gather_to_rank0, raise_agreed, sum_over_ranks
from igan.evaluation import (ROUND_SEED_STEP, SAMPLE_SEED_OFFSET, TOY_SETS, final_num_samples, make_scorer, metrics_of,
                             role_metrics, sample_grid, sample_rounds, scorer_input, scorer_kind, scorer_network,
                             scorer_outputs)
from igan.trainer import Trainer


class Evaluator:
    """Evaluation by role for rank ``rank`` of ``world``: ``val`` on this rank's part of the feed's
    validation hold-out (``validation``), ``test`` on its part of ``data.test_split`` (read from
    ``data_root`` only when the test evaluation runs, at the end)."""

    def __init__(self, cfg: Config, data_root: str | None, rank: int = 0, world: int = 1, validation=None):
        self.cfg, self.rank, self.world, self.root = cfg, rank, world, data_root
        self.data = {"val": validation.part(rank, world) if validation is not None and len(validation) else None,
                     "test": None}
        self.validation = validation if rank == 0 and validation is not None and len(validation) >= 2 else None
        self.reference = None  # the validation set's feature statistics (FID), computed on first use
        self.wants_samples = cfg.data.dataset in TOY_SETS or scorer_kind(cfg) != "none"
        self.scorer = None
        #: the scorer's network (an eval.scorer value, auto resolved): what rank 0 scores with
        self.network = scorer_network(cfg) if rank == 0 else None
        if rank == 0 and scorer_kind(cfg) != "none":
            train = domain_training_data(cfg, data_root) if scorer_kind(cfg) == "domain" else None
            self.scorer = make_scorer(cfg, train=train, network=self.network)

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
        when reading it failed on any rank with a ShardDataError."""
        wrong = total = 0
        failure = None
        try:
            for x, y in (data() if callable(data) else data).batches(EVAL_BATCH):
                wrong += int((trainer.classify(x).argmax(1) != y).sum())
                total += len(y)
        except ShardDataError as exc:
            failure = f"rank {self.rank}: {data_error_reason(exc)}"
        raise_agreed(failure, trainer.device, self.world)
        wrong, total = sum_over_ranks([float(wrong), float(total)], trainer.device, self.world)
        return float(wrong) / max(float(total), 1.0)

    def sample_count(self, role: str) -> int:
        """Samples scored for ``role``: ``eval.num_samples`` (val), :func:`final_num_samples` (test)."""
        return final_num_samples(self.cfg) if role == "test" else self.cfg.eval.num_samples

    def samples(self, trainer: Trainer, role: str, n: int | None = None, round_index: int = 0) -> torch.Tensor | None:
        """``n`` (default :meth:`sample_count`) samples of ``role``'s seed for round ``round_index``,
        generated across the ranks and gathered on rank 0 (None elsewhere)."""
        n = self.sample_count(role) if n is None else n
        share = -(-n // self.world)
        seed = self.cfg.train.seed + SAMPLE_SEED_OFFSET[role] + 7919 * self.rank + ROUND_SEED_STEP * round_index
        mine = trainer.generate(min(share, max(0, n - self.rank * share)), seed=seed)
        return gather_to_rank0(mine, self.world, self.rank)

    def sample_metrics(self, trainer: Trainer, role: str) -> tuple[dict[str, float], torch.Tensor | None]:
        """``(metrics, toy points)`` of :meth:`sample_count` samples of ``role``, generated and scored
        in rounds (:func:`igan.evaluation.sample_rounds`; a collective; metrics and points on rank 0
        only, the points for toy sets). FID (val only) needs the validation hold-out's statistics."""
        cfg = self.cfg
        reference = self.fid_reference() if role == "val" and self.rank == 0 else None
        probs, feats, points = [], [], []
        for index, count in sample_rounds(self.sample_count(role)):
            part = self.samples(trainer, role, count, index)
            if self.rank != 0:
                continue
            if cfg.data.dataset in TOY_SETS:
                points.append(part)
            if self.scorer is not None:
                p, f = scorer_outputs(part, cfg, self.scorer, features=reference is not None)
                probs.append(p)
                feats += [f] if f is not None else []
        if self.rank != 0:
            return {}, None

        def joined(parts):
            return torch.cat(parts) if parts else None

        points = joined(points)
        return metrics_of(cfg, joined(probs), joined(feats), points, reference), points

    def fid_reference(self):
        """The validation hold-out's feature statistics through the scorer (rank 0; None without a
        scorer with features, or without a hold-out), cached on this node by the data's identity."""
        if self.reference is None and self.validation is not None and hasattr(self.scorer, "features"):
            from igan.metrics.fid_reference import reference_key, reference_statistics

            key = reference_key(root=self.root, train_manifest=_manifest_digest(self.root),
                                val=sorted(self.validation.keys), scorer=scorer_kind(self.cfg),
                                network=self.network, size=self.cfg.data.image_size,
                                pixel_range=self.cfg.data.pixel_range)
            batches = (scorer_input(x, self.cfg) for x, _ in self.validation.batches(EVAL_BATCH))
            self.reference = reference_statistics(self.scorer.features, batches, key)
        return self.reference

    def evaluate(self, trainer: Trainer, role: str = "val") -> tuple[dict[str, float], Any]:
        """``(metrics named <role>_*, grid)``: metrics on every rank (scores only on rank 0); the
        sample grid (``uint8 [H, W, 3]``) on rank 0 for ``val``, None otherwise."""
        out: dict[str, float] = {}
        if self.cfg.techniques.semi_supervised and self._has_role(role):
            out["ssl_error"] = self.ssl_error(trainer, lambda: self._role_data(role))
        points = None
        if self.wants_samples:
            scores, points = self.sample_metrics(trainer, role)
            out.update(scores)
        grid = None
        if self.rank == 0 and role == "val":
            if points is not None:  # toy points: all of them
                grid = sample_grid(points, self.cfg)
            else:
                side = self.cfg.eval.grid_size
                grid = sample_grid(trainer.generate(side * side, seed=self.cfg.train.seed + SAMPLE_SEED_OFFSET["val"]),
                                   self.cfg)
        return role_metrics(role, out), grid

    def __call__(self, trainer: Trainer, epoch: int, losses: dict[str, float]) -> tuple[dict[str, float], Any]:
        """``(metrics, grid)`` after 0-based ``epoch``: the losses, the validation metrics when an
        evaluation is due (every ``eval.every`` epochs and the last), and the test metrics after the
        last epoch only. A collective when the world size is above 1: every rank calls it."""
        cfg = self.cfg
        metrics, grid = dict(losses), None
        last = epoch + 1 == cfg.train.epochs
        if (epoch + 1) % cfg.eval.every == 0 or last:
            scores, grid = self.evaluate(trainer, "val")
            metrics.update(scores)
        if last:
            metrics.update(self.evaluate(trainer, "test")[0])
        return metrics, grid


def _manifest_digest(root: str | None) -> str | None:
    """SHA-256 of the train split's manifest under the shard root (None in memory): it names every
    shard's hash, so it identifies the data the hold-out came from."""
    if root is None:
        return None
    import hashlib

    from igan.data.storage import Folder

    try:
        return hashlib.sha256(Folder(root).sub("train").read_bytes("manifest.json")).hexdigest()
    except (OSError, FileNotFoundError):
        return None

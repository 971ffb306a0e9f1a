"""The Trainer: one discriminator step and ``optim.g_steps`` generator steps per batch, every technique
switched by the config, plus exact save/resume. It runs the same in a plain loop and inside a Ray
Train worker (pass ``wrap`` to put G and D under DDP).
"""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
from torch import nn

from igan.averaging import HistoricalAverage, ParameterEMA
from igan.checkpoint import rng_state, set_rng_state
from igan.config import Config
from igan.layers import data_dependent_init, data_initialised_layers
from igan.losses import (feature_matching_loss, generator_adversarial_loss, one_sided_smoothed_bce, r1_penalty,
                         ssl_discriminator_loss)
from igan.models import build_models
from igan.sampling import batch_statistics, draw_samples, uses_batch_statistics


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the loss and the step."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def lr_factor(epoch: int, cfg: Config) -> float:
    """Learning-rate multiplier: 1 until ``optim.decay_start_epoch``, then linear to 0 at the last
    epoch (CIFAR: ``min(3 - epoch/400, 1)`` for 1200 epochs with decay from 800)."""
    start, end = cfg.optim.decay_start_epoch, cfg.train.epochs
    if start < 0 or epoch < start or end <= start:
        return 1.0
    return max(0.0, (end - epoch) / (end - start))


class Trainer:
    """Holds G, D, their optimisers and every training-time average.

    ``init_batch`` (real examples in model range, ``[N, ...]``) drives the data-dependent
    initialisation of weight-normalised layers; ``wrap`` (e.g. Ray Train's ``prepare_model``)
    wraps G and D for data-parallel training after that initialisation.
    """

    def __init__(self, cfg: Config, init_batch: torch.Tensor | None = None, device: torch.device | str | None = None,
                 wrap: Callable[[nn.Module], nn.Module] | None = None):
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else resolve_device(cfg.train.device)
        t = cfg.techniques
        self.G, self.D = build_models(cfg)
        # Dropout and Gaussian-noise layers draw from the global generator: seed it so a run is
        # reproducible and its state (saved in state_dict) determines the rest of the run.
        torch.manual_seed(cfg.train.seed + 2)
        self.noise = torch.Generator().manual_seed(cfg.train.seed + 1)
        self.G.to(self.device)
        self.D.to(self.device)
        if self.device.type == "cuda" and cfg.train.channels_last and cfg.data.image_size > 1:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        if t.weight_norm and init_batch is not None and t.wn_init_examples > 0:
            self._data_dependent_init(init_batch[: t.wn_init_examples])
        self.G_train = wrap(self.G) if wrap else self.G
        self.D_train = wrap(self.D) if wrap else self.D
        o = cfg.optim
        self.opt_d = torch.optim.Adam([p for p in self.D.parameters() if p.requires_grad], lr=o.lr_d, betas=(o.beta1, o.beta2))
        self.opt_g = torch.optim.Adam([p for p in self.G.parameters() if p.requires_grad], lr=o.lr_g, betas=(o.beta1, o.beta2))
        self.ha_d = HistoricalAverage(self.D.parameters()) if t.historical_averaging else None
        self.ha_g = HistoricalAverage(self.G.parameters()) if t.historical_averaging else None
        self.ema = ParameterEMA(self.D, t.ema_rate) if t.eval_ema else None
        self.step = 0
        self.epoch = 0

    # -- set-up -----------------------------------------------------------------------------
    def _data_dependent_init(self, x: torch.Tensor) -> None:
        x = self._to_device(x)
        if any(True for _ in data_initialised_layers(self.D)):
            data_dependent_init(self.D, x)
        if any(True for _ in data_initialised_layers(self.G)):
            data_dependent_init(self.G, self.sample_z(len(x)))

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if x.dim() == 4:
            # streamed batches arrive channels_last (igan.data.decoding); the models see one layout
            cl = self.device.type == "cuda" and self.cfg.train.channels_last
            x = x.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        return x

    def _autocast(self):
        if self.device.type == "cuda" and self.cfg.train.amp == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sample_z(self, n: int) -> torch.Tensor:
        """Latent noise ``z ~ U(0, 1)``, ``[n, z_dim]`` on the training device, from the trainer's own
        generator (so it is part of the resumable state)."""
        return torch.rand(n, self.cfg.model.z_dim, generator=self.noise).to(self.device, non_blocking=True)

    def set_epoch(self, epoch: int) -> None:
        """Record the epoch and apply the learning-rate schedule for it."""
        self.epoch = epoch
        f = lr_factor(epoch, self.cfg)
        for opt, base in ((self.opt_d, self.cfg.optim.lr_d), (self.opt_g, self.cfg.optim.lr_g)):
            for group in opt.param_groups:
                group["lr"] = base * f

    # -- one training step --------------------------------------------------------------------
    def train_step(self, x_unl: torch.Tensor, x_unl2: torch.Tensor | None = None,
                   x_lab: torch.Tensor | None = None, y_lab: torch.Tensor | None = None) -> dict[str, float]:
        """One D step then ``g_steps`` G steps on this batch.

        ``x_unl``: unlabeled real batch ``[B, ...]`` in model range; ``x_unl2``: a second,
        independently shuffled unlabeled batch for feature matching (defaults to ``x_unl``);
        ``x_lab``/``y_lab``: labeled batch and ``int64`` labels (semi-supervised presets); ``x_lab``
        may be ``x_unl`` itself (a fully labeled feed), which a joint discriminator then sees once.
        Returns the losses as floats: ``loss_d``, ``loss_g`` and, when semi-supervised,
        ``loss_lab``/``loss_unl``. Raises NonFiniteLossError on a NaN/inf loss.
        """
        cfg, t = self.cfg, self.cfg.techniques
        self.G_train.train()
        self.D_train.train()
        same_lab = x_lab is x_unl  # a fully labeled feed hands the unlabeled batch in as the labeled one
        x_unl = self._to_device(x_unl)
        x_unl2 = self._to_device(x_unl2) if x_unl2 is not None else x_unl
        if t.semi_supervised:
            if x_lab is None or y_lab is None:
                raise ValueError("semi-supervised training needs a labeled batch (x_lab, y_lab)")
            x_lab, y_lab = x_unl if same_lab else self._to_device(x_lab), y_lab.to(self.device, non_blocking=True)
        logs = self._d_step(x_unl, x_lab, y_lab)
        for _ in range(cfg.optim.g_steps):
            logs["loss_g"] = self._g_step(x_unl2)
        self.step += 1
        values = torch.stack([v.detach().float() for v in logs.values()]).tolist()
        out = dict(zip(logs.keys(), values))
        bad = [k for k, v in out.items() if not np.isfinite(v)]
        if bad:
            raise NonFiniteLossError(f"non-finite {', '.join(bad)} at step {self.step} (epoch {self.epoch}): "
                                     f"{ {k: out[k] for k in bad} }")
        return out

    def _d_step(self, x_unl, x_lab, y_lab) -> dict[str, torch.Tensor]:
        t = self.cfg.techniques
        with torch.no_grad(), self._autocast():
            x_gen = self.G_train(self.sample_z(x_unl.shape[0]))
        # A joint D (cross batch norm, joint minibatch features) treats every row before the
        # generated group as real: the same images twice would be compared with their own copies.
        shared = self.D.joint_batch and x_lab is x_unl
        if t.r1_gamma > 0:
            x_unl = x_unl.detach().requires_grad_(True)
        groups = [x_unl, x_gen] if not t.semi_supervised or shared else [x_lab, x_unl, x_gen]
        sizes = [g.shape[0] for g in groups]
        with self._autocast():
            # One D pass over all groups (one DDP forward per backward); minibatch discrimination
            # still compares samples only within their own group.
            logits, _ = self.D_train(torch.cat([g.to(x_unl.dtype) for g in groups]), group_sizes=sizes)
        parts = logits.float().split(sizes)
        logs: dict[str, torch.Tensor] = {}
        if t.semi_supervised:
            lab, unl, gen = (parts[0], *parts) if shared else parts
            loss_lab, loss_unl = ssl_discriminator_loss(lab, y_lab, unl, gen, real_target=t.real_label)
            loss_d = loss_lab + loss_unl
            logs.update(loss_lab=loss_lab, loss_unl=loss_unl)
        else:
            loss_d = one_sided_smoothed_bce(parts[0], parts[1], real_target=t.real_label)
        if t.r1_gamma > 0:
            logs["r1_penalty"] = r1_penalty(parts[-2], x_unl)  # parts[-2]: the unlabeled real group
            loss_d = loss_d + 0.5 * t.r1_gamma * logs["r1_penalty"]
        loss_d = self._optimizer_step(loss_d, self.opt_d, self.ha_d)
        if self.ema is not None:
            self.ema.update(self.D)
        logs["loss_d"] = loss_d
        return logs

    def _g_step(self, x_real: torch.Tensor) -> torch.Tensor:
        t = self.cfg.techniques
        # The G step goes through the bare D (not its DDP wrapper): D is not updated here, so its
        # gradients are neither needed nor all-reduced, and D's unused logits raise no DDP error.
        frozen = [p for p in self.D.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            with self._autocast():
                x_gen = self.G_train(self.sample_z(x_real.shape[0]))
                if self.D.joint_batch:
                    # D's features of the generated rows depend on the real rows of the batch
                    n = x_real.shape[0]
                    logits, feats = self.D(torch.cat([x_real.to(x_gen.dtype), x_gen]), group_sizes=[n, len(x_gen)])
                    logits_gen, f_real, f_fake = logits[n:], feats[:n].detach(), feats[n:]
                elif t.feature_matching:
                    with torch.no_grad():
                        _, f_real = self.D(x_real)
                    logits_gen, f_fake = self.D(x_gen)
                else:
                    logits_gen, _ = self.D(x_gen)
                if t.feature_matching:
                    loss_g = feature_matching_loss(f_real, f_fake, t.fm_norm)
                else:
                    loss_g = generator_adversarial_loss(logits_gen, t.generator_loss, t.generator_label)
            loss_g = self._optimizer_step(loss_g, self.opt_g, self.ha_g)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return loss_g

    def _optimizer_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer,
                        average: HistoricalAverage | None) -> torch.Tensor:
        """One ``opt`` step on ``loss``, plus the historical-averaging penalty of ``average`` when that
        technique is on (the average then takes in the stepped parameters); returns the scalar loss
        stepped on, penalty included, as both players log it."""
        if average is not None:
            loss = loss + self.cfg.techniques.ha_weight * average.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average is not None:
            average.update()
        return loss

    # -- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, seed: int | None = None, batch_size: int | None = None) -> torch.Tensor:
        """``n`` generated samples on the CPU, float in model range, ``[n, ...]``, drawn as
        :func:`igan.sampling.draw_samples` does: G's batch norm on the statistics of each sampling
        batch (``eval.generator_batch_stats``, the authors' sampling; running averages untouched)
        or on its running averages. ``seed`` gives a reproducible noise draw that leaves the
        training noise untouched."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else self.noise
        self.G.eval()

        def forward(z: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return self.G(z)

        mode = batch_statistics(self.G) if uses_batch_statistics(self.cfg) else contextlib.nullcontext()
        try:
            with mode:
                return draw_samples(forward, self.cfg, n, gen, self.device, batch_size)
        finally:
            self.G.train()

    def classifier(self) -> nn.Module:
        """The discriminator used as a K-way classifier for evaluation (the EMA copy when enabled),
        in eval mode; call it as ``model(x)[0]`` for logits ``[N, K]``."""
        model = self.ema.module if self.ema is not None else self.D
        return model.eval()

    @torch.no_grad()
    def classify(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Class logits ``[N, K]`` (CPU, float32) from :meth:`classifier` for images in model range,
        in batches of ``batch_size`` (default ``data.batch_size``): minibatch discrimination's
        statistics sum over the other images of a batch, so D classifies in batches of the size it
        was trained on (a larger batch inflates the statistic; see benchmarks/RESULTS.md)."""
        model = self.classifier()
        batch_size = batch_size or self.cfg.data.batch_size
        out = []
        for start in range(0, len(x), batch_size):
            with self._autocast():
                out.append(model(self._to_device(x[start:start + batch_size]))[0].float().cpu())
        self.D.train()
        return torch.cat(out)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume exactly: models, optimisers, averages, VBN reference noise
        (a G buffer), RNG states (torch, CUDA, NumPy, Python, the noise generator) and counters.
        Only tensors and plain values (dict, list, str, int, float, None), so the checkpoint loads
        with ``torch.load(weights_only=True)`` (:func:`igan.checkpoint.read_state`)."""
        state = {
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "step": self.step, "epoch": self.epoch,
            "rng": rng_state(self.noise, self.device),
            "config": self.cfg.to_dict(),
        }
        if self.ha_d is not None:
            state["ha_d"], state["ha_g"] = self.ha_d.state_dict(), self.ha_g.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (tensors may come from any device). ValueError
        for a checkpoint written before minibatch discrimination was weight-normalised: its D loads
        (``trainer.D.load_state_dict``), but its optimiser state lacks the new log-scale."""
        stale = [k for k in self.D.state_dict() if k.endswith("log_scale") and k not in state["D"]]
        if stale:
            raise ValueError(f"this checkpoint predates the weight-normed minibatch discrimination ({stale[0]} "
                             "missing): its discriminator loads, its training state cannot resume")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        set_rng_state(state["rng"], self.noise, self.device)
        if self.ha_d is not None and "ha_d" in state:
            self.ha_d.load_state_dict(state["ha_d"])
            self.ha_g.load_state_dict(state["ha_g"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.set_epoch(self.epoch)

"""igan.sampling: samples with the generator's batch norm on batch statistics (the authors'
sampling) or on its running averages, each against a direct computation."""
from __future__ import annotations

import torch
from helpers import tiny

from igan.config import apply_overrides
from igan.sampling import batch_statistics, draw_samples, freeze_batch_statistics, uses_batch_statistics
from igan.trainer import Trainer


def _trainer(*overrides):
    cfg = apply_overrides(tiny("digits"), ["data.batch_size=8", *overrides])
    trainer = Trainer(cfg, device="cpu")
    with torch.no_grad():  # running averages far from any batch's statistics
        for bn in (m for m in trainer.G.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            bn.running_mean.fill_(3.0)
            bn.running_var.fill_(9.0)
    return trainer


def _latents(cfg, rows, seed):
    return torch.rand(rows, cfg.model.z_dim, generator=torch.Generator().manual_seed(seed))


def _bn_state(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


def test_default_is_batch_statistics_in_batches_of_the_training_batch_size():
    trainer = _trainer()
    cfg, G = trainer.cfg, trainer.G
    assert cfg.eval.generator_batch_stats and uses_batch_statistics(cfg)
    before = _bn_state(G)
    samples = trainer.generate(20, seed=4)               # batches of 8: 8, 8, and 4 of a padded 8
    assert all(torch.equal(v, before[k]) for k, v in _bn_state(G).items())  # running averages untouched
    assert G.training and all(m.training for m in G.modules())
    z = _latents(cfg, 24, 4)                             # the draws, padding included
    with torch.no_grad():                                # train mode: batch norm on batch statistics
        expected = torch.cat([G(z[i:i + 8]) for i in (0, 8, 16)])[:20]
    torch.testing.assert_close(samples, expected)


def test_running_averages_when_switched_off():
    trainer = _trainer("eval.generator_batch_stats=false")
    cfg, G = trainer.cfg, trainer.G
    assert not uses_batch_statistics(cfg)
    samples = trainer.generate(20, seed=4)               # one batch of 20 (up to 500 per batch)
    G.eval()
    with torch.no_grad():
        expected = G(_latents(cfg, 20, 4))
    torch.testing.assert_close(samples, expected)
    assert not torch.allclose(samples, _trainer().generate(20, seed=4))


def test_batch_statistics_context_restores_modes_and_touches_nothing_else():
    trainer = _trainer()
    G = trainer.G.eval()
    before = _bn_state(G)
    bns = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    with batch_statistics(G):
        assert all(m.training and not m.track_running_stats for m in bns)
        x = G(_latents(trainer.cfg, 6, 0))
    assert all(not m.training and m.track_running_stats for m in bns)
    assert all(torch.equal(v, before[k]) for k, v in _bn_state(G).items())
    h = G.hidden[0](_latents(trainer.cfg, 6, 0))  # first Linear, then BN by the batch's own statistics
    normed = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bns[0].eps) * bns[0].weight + bns[0].bias
    with torch.no_grad():
        expected = torch.sigmoid(G.out(G.hidden[2](normed))).view(6, 1, 8, 8)
    torch.testing.assert_close(x, expected)


def test_frozen_copy_samples_like_the_trainer():
    """The registered generator: batch norm without running averages samples as evaluation does,
    whatever its mode."""
    import copy

    trainer = _trainer()
    frozen = freeze_batch_statistics(copy.deepcopy(trainer.G)).eval()
    assert not any("running" in k for k in frozen.state_dict())
    got = draw_samples(frozen, trainer.cfg, 20, torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, trainer.generate(20, seed=4))


def test_virtual_batch_norm_generators_are_not_affected():
    cfg = tiny("imagenet128")
    assert cfg.eval.generator_batch_stats and not uses_batch_statistics(cfg)

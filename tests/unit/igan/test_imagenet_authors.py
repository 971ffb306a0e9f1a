"""The authors' ImageNet-128 pair (``imagenet128`` preset, ``model.name=imagenet_authors``): its layers
against direct computations, the pair's shapes and noise, its steps in the Trainer (one process and
two DDP workers), and the DCGAN pair kept as ``model.name=imagenet_dcgan`` (tiny widths, CPU)."""
import json
import os

import pytest
import torch
from helpers import free_port, tiny, tiny_imagenet_dcgan

from igan.config import ConfigError, apply_overrides
from igan.models import build_models
from igan.models.imagenet_authors import AuthorsDiscriminator, AuthorsGenerator
from igan.models.imagenet_layers import (CrossBatchNorm, JointMinibatchDiscrimination, NoiseChannels, SameConv2d,
                                         SameDeconv2d, hashed_uniform)
from igan.presets import get_preset
from igan.trainer import Trainer


def _batch(cfg, n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, cfg.data.channels, cfg.data.image_size, cfg.data.image_size, generator=gen) * 2 - 1
    return x, torch.randint(0, cfg.data.num_classes, (n,), generator=gen)


# -- cross batch norm ---------------------------------------------------------------------------------
def test_cross_batch_norm_normalises_channel_halves_by_real_and_generated_rows():
    torch.manual_seed(0)
    bn = CrossBatchNorm(4)
    x = torch.randn(5, 4, 3, 3) * 3 + 1
    out = bn(x, n_real=3)
    real, gen = x[:3, :2], x[3:, 2:]
    mean = torch.cat([real.mean((0, 2, 3)), gen.mean((0, 2, 3))]).view(1, 4, 1, 1)
    var = torch.cat([real.var((0, 2, 3), unbiased=False), gen.var((0, 2, 3), unbiased=False)]).view(1, 4, 1, 1)
    want = (x - mean) / torch.sqrt(var + 1e-5) * bn.weight.view(1, 4, 1, 1) + bn.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(out, want)
    # running statistics: momentum 0.1 from (0, 1), the variance unbiased per half (27 / 18 values)
    unbiased = torch.cat([real.var((0, 2, 3)), gen.var((0, 2, 3))])
    torch.testing.assert_close(bn.running_mean, 0.1 * mean.flatten())
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * unbiased)
    # dense [N, C] input: the same per channel
    d = torch.randn(6, 4)
    torch.testing.assert_close(bn(d, n_real=2)[:, :2],
                               (d[:, :2] - d[:2, :2].mean(0)) / torch.sqrt(d[:2, :2].var(0, unbiased=False) + 1e-5)
                               * bn.weight[:2] + bn.bias[:2])


def test_cross_batch_norm_without_a_generated_part_uses_running_statistics():
    torch.manual_seed(0)
    bn = CrossBatchNorm(4)
    bn(torch.randn(6, 4, 2, 2) + 2, n_real=3)
    x = torch.randn(3, 4, 2, 2)
    rm, rv = bn.running_mean.view(1, 4, 1, 1), bn.running_var.view(1, 4, 1, 1)
    want = (x - rm) / torch.sqrt(rv + 1e-5) * bn.weight.view(1, 4, 1, 1) + bn.bias.view(1, 4, 1, 1)
    before = bn.running_mean.clone()
    for n_real in (None, 3, 0):  # training mode with no generated rows, or no real ones
        torch.testing.assert_close(bn(x, n_real=n_real), want)
    assert torch.equal(bn.running_mean, before)
    bn.eval()  # eval mode: running statistics even for a joint batch; each row on its own
    torch.testing.assert_close(bn(x, n_real=2), want)
    torch.testing.assert_close(bn(x[:1]), want[:1])


def test_cross_batch_norm_needs_an_even_channel_count():
    with pytest.raises(ValueError, match="halves"):
        CrossBatchNorm(3)


# -- minibatch features over the joint batch ------------------------------------------------------------
def _closeness(mbd, x):
    m = (x @ mbd.T).view(len(x), mbd.num_kernels, mbd.kernel_dim)
    return torch.stack([torch.stack([torch.exp(-(m[i] - m[j]).abs().sum(-1)) for j in range(len(x))])
                        for i in range(len(x))])                                 # [N, N, B]


def test_joint_minibatch_features_are_mean_closeness_to_real_and_to_generated_rows():
    torch.manual_seed(0)
    mbd = JointMinibatchDiscrimination(6, 4, 3)
    x = torch.randn(7, 6) * 3
    n_real = 3
    out = mbd(x, n_real=n_real)
    c = _closeness(mbd, x)
    want = torch.zeros(7, 8)
    for i in range(7):
        real = [j for j in range(n_real) if j != i]
        gen = [j for j in range(n_real, 7) if j != i]
        want[i, :4] = c[i, real].mean(0)
        want[i, 4:] = c[i, gen].mean(0)
    torch.testing.assert_close(out, want)
    # the running closeness of real rows to generated ones, momentum 0.1 from 0
    torch.testing.assert_close(mbd.real_to_generated, 0.1 * want[:n_real, 4:].mean(0))
    assert out.requires_grad and mbd(x, n_real=n_real).sum().grad_fn is not None


def test_joint_minibatch_features_of_real_images_alone():
    """A classifier scores real images only: closeness to the other rows of each group, and the
    running generated closeness (groups of ``block`` rows, the last one shorter)."""
    torch.manual_seed(0)
    mbd = JointMinibatchDiscrimination(6, 4, 3)
    mbd.real_to_generated.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    x = torch.randn(7, 6)
    c = _closeness(mbd, x)
    for block, groups in ((3, [[0, 1, 2], [3, 4, 5], [6]]), (None, [list(range(7))])):
        want = torch.zeros(7, 8)
        for g in groups:
            for i in g:
                others = [j for j in g if j != i]
                want[i, :4] = c[i, others].mean(0) if others else 0.0
                want[i, 4:] = mbd.real_to_generated
        for mode in ("train", "eval"):
            getattr(mbd, mode)()
            torch.testing.assert_close(mbd(x, n_real=None, block=block), want, msg=f"{block} {mode}")


# -- generator noise channels ----------------------------------------------------------------------
def test_hashed_noise_is_uniform_and_a_function_of_each_row():
    z = torch.rand(64, 10)
    u = hashed_uniform(z, (2, 8, 8), salt=1)
    assert u.shape == (64, 2, 8, 8) and u.min() >= -1 and u.max() < 1
    assert abs(u.mean().item()) < 0.02 and abs(u.var().item() - 1 / 3) < 0.02
    torch.testing.assert_close(hashed_uniform(z[5:6], (2, 8, 8), 1), u[5:6])
    assert not torch.equal(hashed_uniform(z, (2, 8, 8), 2), u)      # another layer, other noise
    assert not torch.equal(u[0], u[1])


def test_noise_channels_fresh_in_training_fixed_for_reference_rows():
    layer = NoiseChannels(2, salt=3)
    h, z = torch.zeros(5, 3, 4, 4), torch.rand(5, 10)
    torch.manual_seed(0)
    a = layer(h, z, n_fixed=2)
    torch.manual_seed(0)
    assert torch.equal(layer(h, z, n_fixed=2), a)                   # a seeded run repeats
    b = layer(h, z, n_fixed=2)
    assert a.shape == (5, 5, 4, 4) and torch.equal(a[:, :3], h)
    assert torch.equal(a[:2], b[:2]) and not torch.equal(a[2:], b[2:])  # reference rows fixed, others fresh
    torch.testing.assert_close(a[:2, 3:], hashed_uniform(z[:2], (2, 4, 4), 3))
    layer.eval()
    torch.testing.assert_close(layer(h, z, n_fixed=2)[:, 3:], hashed_uniform(z, (2, 4, 4), 3))


def test_generator_output_depends_on_its_noise_channels():
    cfg = tiny("imagenet128")
    G, _ = build_models(cfg)
    assert isinstance(G, AuthorsGenerator)
    z = torch.rand(2, cfg.model.z_dim)
    torch.manual_seed(1)
    a = G(z)
    torch.manual_seed(1)
    assert torch.equal(G(z), a)                                     # reproducible with a seeded generator
    assert not torch.allclose(G(z), a)                              # fresh noise: another sample of the same z
    G.eval()
    assert torch.equal(G(z), G(z)) and not torch.allclose(G(z), a)  # sampling: a function of z
    assert a.shape == (2, 3, 128, 128) and a.abs().max() <= 1
    # no noise channels: the layers read only the previous layer's channels
    G0, _ = build_models(apply_overrides(cfg, ["model.g_noise_channels=[]"]))
    assert G0.deconvs[0].in_channels == cfg.model.g_widths[0] and G.deconvs[0].in_channels == cfg.model.g_widths[0] + 2


# -- the pair -------------------------------------------------------------------------------------
def test_preset_is_the_authors_recipe():
    cfg = get_preset("imagenet128")
    assert cfg.model.name == "imagenet_authors" and cfg.model.z_dim == 8192
    assert cfg.model.d_widths == [64, 128, 256, 256, 256, 512, 512, 2560]
    assert cfg.model.g_widths == [512, 256, 128, 64, 64, 64] and cfg.model.g_noise_channels == [64, 64, 32, 16, 8, 8]
    t = cfg.techniques
    assert (t.mbd_kernels, t.mbd_dim, t.vbn_reference_size) == (300, 50, 16)
    assert (t.real_label, t.generator_label) == (0.75, 0.375)
    assert cfg.data.batch_size == 16 and (cfg.optim.lr_d, cfg.optim.lr_g, cfg.optim.beta1) == (4e-4, 4e-4, 0.5)
    assert cfg.model.d_input_noise == 0.1


def test_z_dim_up_to_8192():
    apply_overrides(get_preset("digits"), ["model.z_dim=8192"])
    with pytest.raises(ConfigError, match=r"model.z_dim.*\[1, 8192\]"):
        apply_overrides(get_preset("digits"), ["model.z_dim=8193"])


def test_discriminator_shapes_and_logits_relative_to_the_generated_logit():
    cfg = tiny("imagenet128")
    _, D = build_models(cfg)
    assert isinstance(D, AuthorsDiscriminator) and D.joint_batch
    assert [c.stride[0] for c in D.convs] == [2, 2, 2, 1, 1, 2, 2] and D.fc.in_features == 4 * 4 * 4
    assert D.out.out_features == 1001 and D.out.in_features == 8 + 2 * 5
    x, _ = _batch(cfg, 6)
    captured = {}
    D.out.register_forward_hook(lambda m, i, o: captured.update(out=o))
    logits, feats = D(x, group_sizes=[2, 2, 2])
    assert logits.shape == (6, 1000) and feats.shape == (6, 8)
    torch.testing.assert_close(logits, captured["out"][:, :1000] - captured["out"][:, 1000:])
    # the features fm_layer picks: eight layers (seven convs, the dense layer)
    _, D0 = build_models(apply_overrides(cfg, ["techniques.fm_layer=0"]))
    assert D0(x, group_sizes=[3, 3])[1].shape == (6, 4)
    # unsupervised: one logit, no generated logit to subtract
    _, Du = build_models(apply_overrides(cfg, ["techniques.semi_supervised=false", "data.labels_per_class=0"]))
    assert Du(x, group_sizes=[3, 3])[0].shape == (6, 1)


def test_same_padding_matches_tensorflow_shapes():
    x = torch.randn(1, 2, 16, 16)
    assert SameConv2d(2, 3, 3, 2)(x).shape == (1, 3, 8, 8) and SameConv2d(2, 3, 3, 1)(x).shape == (1, 3, 16, 16)
    assert SameConv2d(2, 3, 3, 2)(torch.randn(1, 2, 15, 15)).shape == (1, 3, 8, 8)
    assert SameDeconv2d(2, 3)(x).shape == (1, 3, 32, 32) and SameDeconv2d(2, 3, 5, 1)(x).shape == (1, 3, 16, 16)
    # a stride-2 3x3 conv on an even side pads only after: its first output reads pixels 0..2
    conv = SameConv2d(1, 1, 3, 2)
    torch.nn.init.ones_(conv.weight)
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, 0, 0] = 1.0
    assert conv(img)[0, 0, 0, 0] == 1.0 + conv.bias


@pytest.mark.parametrize("override,message", [
    ("techniques.weight_norm=true", "weight_norm' must be false"),
    ("model.d_widths=[4,4,4,8]", "d_widths needs 8 entries"),
    ("model.g_widths=[8,4,4]", "g_widths needs 6 entries"),
    ("model.g_noise_channels=[1,1]", "g_noise_channels needs one entry"),
    ("model.d_widths=[4,4,4,4,4,4,3,8]", "halves"),
])
def test_bad_architecture_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        build_models(apply_overrides(tiny("imagenet128"), [override]))


# -- the Trainer --------------------------------------------------------------------------------
def test_trainer_gives_d_one_joint_batch_in_both_steps(monkeypatch):
    cfg = tiny("imagenet128")
    trainer = Trainer(cfg, device="cpu")
    calls, forward = [], AuthorsDiscriminator.forward

    def recording(self, x, group_sizes=None):
        calls.append((len(x), group_sizes))
        return forward(self, x, group_sizes)

    monkeypatch.setattr(AuthorsDiscriminator, "forward", recording)
    x, y = _batch(cfg)
    logs = trainer.train_step(x, x.flip(0), x, y)                  # fully labeled: x_lab is x_unl
    assert calls == [(8, [4, 4]), (8, [4, 4])] and all(torch.isfinite(torch.tensor(list(logs.values()))))
    calls.clear()
    trainer.train_step(x, x.flip(0), x.clone(), y)                 # another labeled batch: three groups
    assert calls == [(12, [4, 4, 4]), (8, [4, 4])]
    before = trainer.D.norms[0].running_mean.clone()
    assert trainer.classify(x).shape == (4, 1000)                  # real images alone: running statistics
    assert torch.equal(trainer.D.norms[0].running_mean, before)
    assert trainer.generate(3, seed=5).shape == (3, 3, 128, 128)
    torch.testing.assert_close(trainer.generate(3, seed=5), trainer.generate(3, seed=5))


def test_feature_matching_with_the_joint_discriminator():
    cfg = apply_overrides(tiny("imagenet128"), ["techniques.feature_matching=true"])
    trainer = Trainer(cfg, device="cpu")
    x, y = _batch(cfg)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    logs = trainer.train_step(x, x.flip(0), x, y)
    assert logs["loss_g"] > 0 and any(not torch.equal(a, p) for a, p in zip(before, trainer.G.parameters()))


def test_dcgan_pair_is_kept_as_an_option_and_old_checkpoints_load():
    cfg = tiny_imagenet_dcgan()
    trainer = Trainer(cfg, device="cpu")
    assert type(trainer.D).__name__ == "StridedDiscriminator" and not trainer.D.joint_batch
    x, y = _batch(cfg)
    logs = trainer.train_step(x, x.flip(0), x, y)
    assert {"loss_d", "loss_g", "loss_lab", "loss_unl"} <= set(logs)
    # a checkpoint of the old preset (its config names imagenet_dcgan, with z of 100 dims) restores
    old = dict(cfg.to_dict(), model=dict(cfg.to_dict()["model"], z_dim=100))
    old["model"].pop("g_noise_channels")                          # configs written before the key existed
    from igan.config import Config

    old_cfg = Config.from_dict(old)
    state = Trainer(old_cfg, device="cpu").state_dict()
    restored = Trainer(Config.from_dict(state["config"]), device="cpu")
    restored.load_state_dict(state)
    assert restored.cfg.model.name == "imagenet_dcgan" and restored.G.z_dim == 100


# -- two DDP workers ------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = tiny("imagenet128")
    trainer = Trainer(cfg, device="cpu", wrap=lambda m: DDP(m, broadcast_buffers=False))
    trainer.noise.manual_seed(100 + rank)                          # each rank its own data and noise
    torch.manual_seed(200 + rank)
    start = [p.detach().clone() for m in (trainer.G, trainer.D) for p in m.parameters()]
    losses = []
    for step in range(2):  # a second step: DDP reports unused parameters of the first one here
        x, y = _batch(cfg, 4, seed=10 * rank + step)
        losses.append(trainer.train_step(x, x.flip(0), x, y))
    params = {f"{k}.{n}": p.detach() for k, m in (("G", trainer.G), ("D", trainer.D)) for n, p in m.named_parameters()}
    changed = sum(not torch.equal(a, p) for a, p in zip(start, params.values()))
    torch.save({"params": params, "changed": changed, "count": len(start)}, os.path.join(out, f"rank{rank}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(losses, f)
    dist.destroy_process_group()


def test_one_d_and_g_step_on_two_ddp_workers(tmp_path):
    """Both workers step the joint D (cross batch norm and joint minibatch features on their own
    batches) and G under DDP on different data: the all-reduced updates leave identical models."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    losses = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["changed"] > r["count"] // 2 for r in ranks)      # both players stepped
    assert losses[0] != losses[1]                                  # different data and noise on each rank
    assert all(torch.isfinite(torch.tensor(v)) for run in losses for step in run for v in step.values())
    for k, p in ranks[0]["params"].items():
        torch.testing.assert_close(ranks[1]["params"][k], p, rtol=1e-5, atol=1e-6, msg=k)

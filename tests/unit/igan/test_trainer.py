"""The Trainer: gradients go where they should, every preset takes a step, resume is exact."""
import subprocess
import sys
import textwrap

import pytest
import torch

from igan.checkpoint import read_state
from igan.config import apply_overrides
from igan.data.memory import load_embedded
from igan.checkpoint import save_checkpoint
from igan.loop import fit
from igan.losses import r1_penalty
from igan.presets import get_preset
from igan.trainer import NonFiniteLossError, Trainer, lr_factor
from helpers import tiny


def _batch(cfg, n=6):
    if cfg.model.name == "toy_mlp":
        x = torch.randn(n, 2)
    else:
        x = torch.rand(n, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    y = torch.randint(0, cfg.data.num_classes, (n,))
    return x, x.flip(0), x, y


@pytest.mark.parametrize("preset", ["digits", "mnist", "cifar10", "svhn", "imagenet128", "ring8", "grid25",
                                    "cifar10_mbd", "cifar10_mbd_no_l"])
def test_one_step_per_preset(preset):
    cfg = apply_overrides(tiny(preset), ["techniques.historical_averaging=true"])
    x, x2, xl, yl = _batch(cfg)
    trainer = Trainer(cfg, init_batch=x, device="cpu")
    before_d = [p.detach().clone() for p in trainer.D.parameters()]
    before_g = [p.detach().clone() for p in trainer.G.parameters() if p.requires_grad]
    logs = trainer.train_step(x, x2, xl, yl)
    assert {"loss_d", "loss_g"} <= set(logs) and trainer.step == 1
    assert any(not torch.equal(a, p) for a, p in zip(before_d, trainer.D.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(before_g, [p for p in trainer.G.parameters() if p.requires_grad]))


def test_channels_last_batches_train_exactly_like_contiguous_ones():
    """Streamed batches arrive channels_last; the trainer must compute the same step from them."""
    cfg = tiny("cifar10")
    x, x2, xl, yl = _batch(cfg)
    runs = []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        trainer = Trainer(cfg, init_batch=x, device="cpu")
        logs = trainer.train_step(*(t.contiguous(memory_format=layout) for t in (x, x2, xl)), yl)
        runs.append((logs, [p.detach().clone() for p in trainer.D.parameters()]))
    assert runs[1][0] == runs[0][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_classify_uses_training_sized_batches_so_mbd_sees_what_it_learned():
    cfg = apply_overrides(tiny("digits"), ["techniques.minibatch_discrimination=true", "techniques.mbd_kernels=4",
                                           "techniques.mbd_dim=3", "data.batch_size=10"])
    trainer = Trainer(cfg, device="cpu")
    x = torch.rand(25, 1, 8, 8)
    logits = trainer.classify(x)
    assert logits.shape == (25, 10)
    # each image's logits depend only on its own training-sized batch, not on how many come after
    torch.testing.assert_close(logits[:10], trainer.classify(x[:10]))
    torch.testing.assert_close(logits[20:], trainer.classify(x[20:]))
    assert not torch.allclose(trainer.classify(x, batch_size=25)[:10], logits[:10])


@pytest.mark.parametrize("preset", ["grid25", "digits"])
def test_r1_penalty_enters_the_d_step(preset):
    # same state, gamma 0 vs gamma 2: D's loss differs by exactly gamma/2 * E||grad_x logit(x_real)||^2
    cfg = tiny(preset)
    x, x2, xl, yl = _batch(cfg)
    logs, states = [], []
    for gamma in (0.0, 2.0):
        trainer = Trainer(apply_overrides(cfg, [f"techniques.r1_gamma={gamma}"]), init_batch=x, device="cpu")
        states.append([p.detach().clone() for p in trainer.D.parameters()])
        logs.append(trainer.train_step(x, x2, xl, yl))
    assert "r1_penalty" not in logs[0] and logs[1]["r1_penalty"] > 0
    assert logs[1]["loss_d"] == pytest.approx(logs[0]["loss_d"] + logs[1]["r1_penalty"], rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(*states))           # both started from the same D
    if preset == "grid25":  # no noise layers in this D: the penalty is the one of the real batch
        fresh = Trainer(apply_overrides(cfg, ["techniques.r1_gamma=2"]), init_batch=x, device="cpu")
        x_req = x.clone().requires_grad_(True)
        direct = r1_penalty(fresh.D(x_req, group_sizes=[len(x)])[0], x_req)
        assert logs[1]["r1_penalty"] == pytest.approx(direct.item(), rel=1e-5)


def test_d_step_leaves_generator_without_gradients():
    cfg = tiny("digits")
    x, _, xl, yl = _batch(cfg)
    trainer = Trainer(cfg, init_batch=x, device="cpu")
    trainer._d_step(x, xl, yl)
    assert all(p.grad is None for p in trainer.G.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.D.parameters())


def test_g_step_leaves_discriminator_untouched():
    cfg = apply_overrides(tiny("digits"), ["techniques.minibatch_discrimination=true",
                                           "techniques.mbd_kernels=3", "techniques.mbd_dim=2"])
    x, *_ = _batch(cfg)
    trainer = Trainer(cfg, init_batch=x, device="cpu")
    trainer.opt_d.zero_grad(set_to_none=True)
    trainable = [p.requires_grad for p in trainer.D.parameters()]
    trainer._g_step(x)
    assert all(p.grad is None for p in trainer.D.parameters())
    assert [p.requires_grad for p in trainer.D.parameters()] == trainable
    assert any(p.grad is not None for p in trainer.G.parameters())


def test_non_finite_loss_is_caught():
    cfg = tiny("digits")
    x, x2, xl, yl = _batch(cfg)
    trainer = Trainer(cfg, init_batch=x, device="cpu")
    with torch.no_grad():
        trainer.D.out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        trainer.train_step(x, x2, xl, yl)


def test_lr_schedule_matches_cifar_recipe():
    cfg = get_preset("cifar10")
    for epoch in (0, 400, 799, 800, 1000, 1199):
        assert lr_factor(epoch, cfg) == pytest.approx(min(3 - epoch / 400, 1))


RESUME_OVERRIDES = ["model.d_widths=[24,12]", "model.g_widths=[16]", "data.batch_size=20", "train.epochs=40",
                    "techniques.historical_averaging=true", "techniques.minibatch_discrimination=true",
                    "techniques.mbd_kernels=4", "techniques.mbd_dim=3", "train.steps_per_epoch=50"]


def _resume_cfg():
    return apply_overrides(get_preset("digits"), RESUME_OVERRIDES)


def test_resume_is_exact_across_processes(tmp_path):
    torch.set_num_threads(1)
    cfg = _resume_cfg()
    data = load_embedded(cfg, "train")
    straight = fit(cfg, data, max_steps=2000)
    half = fit(cfg, data, max_steps=1000)
    save_checkpoint(half, tmp_path / "half")
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from igan.config import apply_overrides
        from igan.presets import get_preset
        from igan.data.memory import load_embedded
        from igan.checkpoint import load_trainer, save_checkpoint
        from igan.loop import fit
        cfg = apply_overrides(get_preset("digits"), {RESUME_OVERRIDES!r})
        trainer = load_trainer(cfg, {str(tmp_path / 'half')!r})
        fit(cfg, load_embedded(cfg, "train"), trainer=trainer, max_steps=2000)
        save_checkpoint(trainer, {str(tmp_path / 'resumed')!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    resumed = read_state(tmp_path / "resumed" / "state.pt")  # also: the checkpoint loads without a full unpickler
    assert straight.step == resumed["step"] == 2000
    for name in ("G", "D"):
        ref = getattr(straight, name).state_dict()
        for key, value in resumed[name].items():
            assert torch.equal(ref[key], value), f"{name}.{key} differs after resume"
    for a, b in zip(straight.ema.shadow, resumed["ema"]["shadow"]):
        assert torch.equal(a, b)


def test_checkpoint_from_before_weight_normed_mbd_loads_d_but_does_not_resume():
    cfg = apply_overrides(tiny("digits"), ["techniques.minibatch_discrimination=true", "techniques.mbd_kernels=3"])
    trainer = Trainer(cfg, device="cpu")
    state = trainer.state_dict()
    old_d = {k: v for k, v in state["D"].items() if not k.endswith("log_scale")}  # as saved before
    with pytest.raises(ValueError, match="predates the weight-normed minibatch discrimination"):
        trainer.load_state_dict({**state, "D": old_d})
    Trainer(cfg, device="cpu").D.load_state_dict(old_d)  # the discriminator alone loads

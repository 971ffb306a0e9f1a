"""CUDA paths (bf16 autocast, channels_last). Skipped without a GPU, as on CI."""
import pytest
import torch

from igan.config import apply_overrides
from igan.trainer import Trainer
from helpers import tiny

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("preset", ["cifar10", "imagenet128", "digits"])
def test_bf16_channels_last_step_on_cuda(preset):
    cfg = apply_overrides(tiny(preset), ["train.device=cuda", "train.amp=bf16", "train.channels_last=true"])
    n = 8
    x = torch.rand(n, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    y = torch.randint(0, cfg.data.num_classes, (n,))
    trainer = Trainer(cfg, init_batch=x)
    assert trainer.device.type == "cuda"
    logs = trainer.train_step(x, x, x, y)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert trainer.generate(4).shape[0] == 4
    assert trainer.classify(x).shape == (n, cfg.data.num_classes)


def test_state_dict_moves_between_cuda_and_cpu():
    cfg = apply_overrides(tiny("digits"), ["train.device=cuda"])
    x = torch.rand(8, 1, 8, 8)
    trainer = Trainer(cfg, init_batch=x)
    trainer.train_step(x, x, x, torch.randint(0, 10, (8,)))
    cpu = Trainer(apply_overrides(cfg, ["train.device=cpu"]))
    cpu.load_state_dict(trainer.state_dict())
    for p, q in zip(trainer.G.parameters(), cpu.G.parameters()):
        assert torch.equal(p.cpu(), q)

"""Helpers shared by the tests (imported as ``helpers`` and ``helpers.<module>``; tests/ is on the
path through tests/conftest.py): the repository root, a free local port and tiny model configs.
The modules beside this one hold the larger helpers: fault hooks (``faults``), format-faithful data
fixtures (``fixtures_formats``), the cluster-file checks (``cluster_checks``, ``cluster_commands``),
the credential-checking proxy (``auth_proxy``), the CLI runner (``cli_run``), job folders
(``train_jobs``), headless Chromium for the browser tests (``browser``) and runs shaped like
training runs for the report tests (``report_runs``)."""
from __future__ import annotations

import socket
from pathlib import Path

from igan.config import Config, apply_overrides
from igan.presets import get_preset

#: The repository root.
REPO = Path(__file__).resolve().parents[2]

#: Overrides that shrink each preset's models to a few channels (shapes kept), for CPU tests.
TINY_MODELS = {
    "digits": ["model.d_widths=[16,8]", "model.g_widths=[16]"],
    "mnist": ["model.d_widths=[16,8]", "model.g_widths=[16]"],
    "cifar10": ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]"],
    "svhn": ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]", "techniques.minibatch_discrimination=true",
             "techniques.mbd_kernels=4", "techniques.mbd_dim=3"],
    "imagenet128": ["model.d_widths=[4,4,4,4,4,4,4,8]", "model.g_widths=[8,4,4,4,4,4]",
                    "model.g_noise_channels=[2,2,1,1,1,1]", "techniques.mbd_kernels=5", "techniques.mbd_dim=3",
                    "techniques.vbn_reference_size=3"],
    "ring8": [], "grid25": [],
}
#: The Table 3 presets share one tiny shape: the cifar10 widths, few MBD kernels, a small VBN reference.
TINY_MODELS.update({name: ["model.d_widths=[8,8]", "model.g_widths=[16,8,8]", "techniques.mbd_kernels=4",
                           "techniques.vbn_reference_size=4"]
                    for name in ("cifar10_mbd", "cifar10_mbd_no_vbn", "cifar10_mbd_no_l_ha", "cifar10_mbd_no_ls",
                                 "cifar10_mbd_no_l", "cifar10_mbd_no_mbf")})


def tiny(preset: str) -> Config:
    """Preset ``preset`` with its models shrunk by :data:`TINY_MODELS`."""
    return apply_overrides(get_preset(preset), TINY_MODELS[preset])


#: ``imagenet128`` with igan's earlier DCGAN pair (``model.name=imagenet_dcgan``) at tiny widths.
TINY_IMAGENET_DCGAN = ["model.name=imagenet_dcgan", "model.d_widths=[4,4,4,4,8]", "model.g_widths=[8,4,4,4,4]",
                       "model.g_noise_channels=[]", "techniques.mbd_kernels=5", "techniques.mbd_dim=3",
                       "techniques.vbn_reference_size=3"]


def tiny_imagenet_dcgan() -> Config:
    """The ``imagenet128`` preset with the DCGAN pair at tiny widths (:data:`TINY_IMAGENET_DCGAN`)."""
    return apply_overrides(get_preset("imagenet128"), TINY_IMAGENET_DCGAN)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LinearSoftmaxScorer:
    """A scorer without weights or training: class probabilities are a fixed linear map of the
    pixels (``[N, ...]`` -> ``[N, classes]``), features the pixels; a direct function of each image."""

    def __init__(self, pixels: int, classes: int = 7):
        import torch

        self.map = torch.randn(pixels, classes, generator=torch.Generator().manual_seed(3)) / pixels ** 0.5

    def probabilities(self, images):
        import torch

        return torch.softmax(torch.as_tensor(images).flatten(1).float() / 64 @ self.map, 1)

    def features(self, images):
        import torch

        return torch.as_tensor(images).flatten(1).float()

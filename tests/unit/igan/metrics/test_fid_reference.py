"""The real side of FID (igan.metrics.fid_reference): statistics cached by key, and the distance
against a direct computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from igan.metrics.fid import fid_from_features
from igan.metrics.fid_reference import fid_to_reference, reference_key, reference_statistics


def test_reference_is_computed_once_then_read_from_the_cache(tmp_path):
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(64, 5, generator=gen)
    calls = []

    def features(x):
        calls.append(len(x))
        return x * 2

    key = reference_key(root="/data", split="val", network="net")
    mu, sigma = reference_statistics(features, real.split(16), key, tmp_path)
    assert calls == [16, 16, 16, 16] and list(tmp_path.glob("*.npz")) == [tmp_path / f"{key}.npz"]
    again = reference_statistics(features, real.split(16), key, tmp_path)
    assert calls == [16, 16, 16, 16]  # not computed again
    np.testing.assert_allclose(again[0], mu) and np.testing.assert_allclose(again[1], sigma)
    np.testing.assert_allclose(mu, (2 * real).double().mean(0).numpy(), rtol=1e-12)
    assert reference_key(root="/data", split="val", network="other") != key


def test_fid_to_reference_equals_the_direct_fid(tmp_path):
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(200, 4, generator=gen), torch.randn(150, 4, generator=gen) + 0.5
    ref = reference_statistics(lambda x: x, [real], "k", tmp_path)
    assert fid_to_reference(fake, ref) == pytest.approx(fid_from_features(real.numpy(), fake.numpy()), rel=1e-9)


def test_damaged_cache_file_is_recomputed(tmp_path):
    (tmp_path / "k.npz").write_bytes(b"not an npz")
    mu, _ = reference_statistics(lambda x: x, [torch.ones(3, 2), torch.zeros(3, 2)], "k", tmp_path)
    np.testing.assert_allclose(mu, [0.5, 0.5])

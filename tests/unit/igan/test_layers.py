"""Each layer against a direct formula on small tensors."""
import itertools

import pytest
import torch

from igan.layers import (GaussianNoise, MinibatchDiscrimination, VirtualBatchNorm, WNConv2d, WNConvTranspose2d,
                         WNLinear, data_dependent_init)


def _mbd_reference(x, T, bias, B, C):
    m = (x @ T).view(len(x), B, C)
    o = torch.zeros(len(x), B, dtype=x.dtype)
    for i, j in itertools.product(range(len(x)), repeat=2):
        if i != j:
            o[i] += torch.exp(-(m[i] - m[j]).abs().sum(-1))
    return torch.cat([x, o + bias], 1)


def test_minibatch_discrimination_matches_formula_and_excludes_self():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(4, 3, 2).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (5, 4 + 3)
    torch.testing.assert_close(out, _mbd_reference(x, layer.T, layer.bias, 3, 2))
    torch.testing.assert_close(layer.statistics(x), out[:, 4:])
    # A lone sample has nobody to compare with: its statistic is only the bias (self excluded).
    torch.testing.assert_close(layer(x[:1])[:, 4:], layer.bias.detach().view(1, -1))


def test_minibatch_discrimination_groups_are_independent():
    torch.manual_seed(1)
    layer = MinibatchDiscrimination(3, 2, 4).double()
    a, b = torch.randn(3, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    grouped = layer(torch.cat([a, b]), group_sizes=[3, 4])
    torch.testing.assert_close(grouped, torch.cat([layer(a), layer(b)]))
    assert not torch.allclose(grouped, layer(torch.cat([a, b])))


@pytest.mark.parametrize("n", [1, 3, 4, 10, 12])
def test_minibatch_discrimination_int_group_size_is_consecutive_groups(n):
    """``group_sizes=b`` (what a registered classifier uses, exportable for any batch size) gives
    the statistics of consecutive groups of ``b`` rows, the last one shorter."""
    torch.manual_seed(0)
    mbd = MinibatchDiscrimination(6, 5, 3)
    x = torch.randn(n, 6)
    sizes = [4] * (n // 4) + ([n % 4] if n % 4 else [])
    torch.testing.assert_close(mbd(x, 4), mbd(x, sizes))


def test_minibatch_discrimination_authors_initialisation():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(200, 100, 5)
    assert layer.T.shape == (200, 500)
    assert abs(layer.T.std().item() - 0.05) < 0.002
    assert torch.all(layer.bias == -1.0)


@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 4, 5)])
def test_virtual_batch_norm_matches_formula(shape):
    torch.manual_seed(0)
    ref_size = 4
    vbn = VirtualBatchNorm(3, ref_size).double()
    with torch.no_grad():
        vbn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        vbn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    out = vbn(x)
    axes = [0] + list(range(2, x.dim()))
    view = [1, -1] + [1] * (x.dim() - 2)
    ref = x[:ref_size]
    mu_r, sq_r = ref.mean(axes, keepdim=True), (ref ** 2).mean(axes, keepdim=True)
    g, b = vbn.weight.detach().view(view), vbn.bias.detach().view(view)
    torch.testing.assert_close(out[:ref_size], (ref - mu_r) / torch.sqrt(1e-5 + sq_r - mu_r ** 2) * g + b)
    c = 1.0 / (ref_size + 1)
    for i in range(ref_size, shape[0]):
        xi = x[i:i + 1]
        own = list(range(2, x.dim()))
        mu_i = xi.mean(own, keepdim=True) if own else xi
        sq_i = (xi ** 2).mean(own, keepdim=True) if own else xi ** 2
        mu, sq = c * mu_i + (1 - c) * mu_r, c * sq_i + (1 - c) * sq_r
        torch.testing.assert_close(out[i:i + 1], (xi - mu) / torch.sqrt(1e-5 + sq - mu ** 2) * g + b)


def test_virtual_batch_norm_examples_do_not_depend_on_each_other():
    torch.manual_seed(0)
    vbn = VirtualBatchNorm(3, 4)
    ref, a, b = torch.randn(4, 3, 2, 2), torch.randn(1, 3, 2, 2), torch.randn(5, 3, 2, 2)
    alone = vbn(torch.cat([ref, a]))[4:]
    with_others = vbn(torch.cat([ref, a, b]))[4:5]
    torch.testing.assert_close(alone, with_others)
    with pytest.raises(ValueError, match="reference"):
        vbn(torch.randn(2, 3, 2, 2))


def test_gaussian_noise_only_in_training():
    layer = GaussianNoise(0.5)
    x = torch.zeros(20000)
    torch.manual_seed(0)
    assert abs(layer(x).std().item() - 0.5) < 0.01
    assert torch.equal(layer.eval()(x), x)


def test_weight_norm_linear_weight_is_g_times_unit_direction():
    layer = WNLinear(4, 3, train_scale=True)
    with torch.no_grad():
        layer.g.copy_(torch.tensor([1.0, 2.0, 3.0]))
    w = layer.weight()
    torch.testing.assert_close(w.norm(dim=1), torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(2, 4)
    torch.testing.assert_close(layer(x), x @ w.t() + layer.bias)
    assert layer.g.requires_grad and not WNLinear(4, 3).g.requires_grad


@pytest.mark.parametrize("make,shape", [
    (lambda: WNLinear(6, 5, init_scale=0.7), (300, 6)),
    (lambda: WNConv2d(3, 4, 3, 1, 1, init_scale=0.7), (64, 3, 6, 6)),
    (lambda: WNConvTranspose2d(3, 4, 5, init_scale=0.7), (64, 3, 4, 4)),
])
def test_data_dependent_init_normalises_preactivations(make, shape):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(*shape) * 4 + 2
    data_dependent_init(layer, x)
    y = layer(x)
    axes = [0] + list(range(2, y.dim()))
    torch.testing.assert_close(y.mean(axes), torch.zeros(y.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(axes), torch.full((y.shape[1],), 0.7), atol=1e-3, rtol=0)


def test_data_dependent_init_goes_layer_by_layer():
    torch.manual_seed(0)
    net = torch.nn.Sequential(WNLinear(5, 8), torch.nn.ReLU(), WNLinear(8, 3))
    x = torch.randn(500, 5) * 10
    data_dependent_init(net, x)
    y = net(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(3), atol=1e-3, rtol=0)


def test_transposed_conv_doubles_size():
    assert WNConvTranspose2d(3, 2, 5)(torch.randn(2, 3, 4, 4)).shape == (2, 2, 8, 8)

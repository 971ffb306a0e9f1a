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


def test_minibatch_discrimination_construction():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(200, 100, 5)
    assert layer.T.shape == (200, 500) and layer.log_scale is None
    assert abs(layer.T.std().item() - 0.05) < 0.002
    assert torch.all(layer.bias == -1.0)
    assert torch.equal(layer.weight(), layer.T)
    wn = MinibatchDiscrimination(200, 100, 5, weight_norm=True)
    assert wn.log_scale.shape == (100, 5) and torch.all(wn.log_scale == 0) and torch.all(wn.bias == -1.0)
    torch.testing.assert_close(wn.weight().norm(dim=0), torch.ones(500))  # unit columns before the init


def test_minibatch_discrimination_weight_norm_formula():
    """W = T * exp(log_scale) / ||T|| column by column, column b*C + c for kernel b, dimension c."""
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(4, 3, 2, weight_norm=True).double()
    with torch.no_grad():
        layer.log_scale.copy_(torch.randn(3, 2, dtype=torch.float64))
    expected = torch.empty(4, 6, dtype=torch.float64)
    for b, c in itertools.product(range(3), range(2)):
        col = layer.T[:, b * 2 + c]
        expected[:, b * 2 + c] = col / col.norm() * layer.log_scale[b, c].exp()
    torch.testing.assert_close(layer.weight(), expected)
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _mbd_reference(x, expected, layer.bias, 3, 2))


@pytest.mark.parametrize("groups", [None, [30, 34]])
def test_minibatch_discrimination_data_dependent_init(groups):
    """On the init batch: every kernel's mean nearest-neighbour L1 distance is 2, and the bias is
    minus the mean of the statistic, so the statistics are centred."""
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(16, 7, 3, weight_norm=True).double()
    x = torch.randn(64, 16, dtype=torch.float64) * 3 + 1
    data_dependent_init(layer, x, group_sizes=groups)  # the init batch is one group either way
    m = (x @ layer.weight()).view(64, 7, 3)
    dist = (m[:, None] - m[None]).abs().sum(-1)             # [i, j, B]
    dist = dist + torch.diag(torch.full((64,), float("inf"), dtype=torch.float64))[:, :, None]
    nearest = dist.min(1).values.mean(0)                    # [B]
    torch.testing.assert_close(nearest, torch.full((7,), 2.0, dtype=torch.float64))
    o = _mbd_reference(x, layer.weight(), torch.zeros(7, dtype=torch.float64), 7, 3)[:, 16:]
    torch.testing.assert_close(layer.bias.detach(), -o.mean(0))
    torch.testing.assert_close(layer.statistics(x).mean(0), torch.zeros(7, dtype=torch.float64))
    plain = MinibatchDiscrimination(16, 7, 3)
    before = (plain.T.clone(), plain.bias.clone())
    data_dependent_init(plain, x.float())  # the plain form has no data-dependent init
    assert torch.equal(plain.T, before[0]) and torch.equal(plain.bias, before[1])


def test_minibatch_discrimination_init_inside_a_network_sees_the_layers_below():
    torch.manual_seed(0)
    net = torch.nn.Sequential(WNLinear(8, 12), torch.nn.ReLU(), MinibatchDiscrimination(12, 5, 4, weight_norm=True),
                              WNLinear(17, 3, init_scale=0.1))
    x = torch.randn(200, 8) * 5
    data_dependent_init(net, x)
    h = net[1](net[0](x))
    m = (h @ net[2].weight()).view(200, 5, 4)
    dist = torch.cdist(m.transpose(0, 1), m.transpose(0, 1), p=1.0) + torch.diag(torch.full((200,), float("inf")))
    torch.testing.assert_close(dist.min(2).values.mean(1), torch.full((5,), 2.0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(net(x).std(0, correction=0), torch.full((3,), 0.1), atol=1e-5, rtol=0)


def test_minibatch_discrimination_loads_a_state_dict_from_before_weight_norm():
    """A D saved when T was the matrix itself loads into the weight-normed form with the same W."""
    torch.manual_seed(0)
    old = MinibatchDiscrimination(10, 4, 3)
    with torch.no_grad():
        old.bias.copy_(torch.randn(4))
    state = old.state_dict()
    assert set(state) == {"T", "bias"}
    new = MinibatchDiscrimination(10, 4, 3, weight_norm=True)
    new.load_state_dict(state)  # strict: log_scale is derived, not missing
    torch.testing.assert_close(new.weight(), old.T.detach())
    x = torch.randn(6, 10)
    torch.testing.assert_close(new(x), old(x))
    assert set(new.state_dict()) == {"T", "log_scale", "bias"}


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
    # the population std (mean of squares), as the authors' WeightNormLayer computes it
    torch.testing.assert_close(y.std(axes, correction=0), torch.full((y.shape[1],), 0.7), atol=1e-5, rtol=0)


def test_data_dependent_init_can_be_switched_off_per_layer():
    """``init_scale=None`` (the authors' MNIST generator output): the init pass leaves g = 1, bias = 0."""
    torch.manual_seed(0)
    layer = WNLinear(6, 5, train_scale=True, init_scale=None)
    x = torch.randn(300, 6) * 4 + 2
    data_dependent_init(layer, x)
    assert torch.equal(layer.g.detach(), torch.ones(5)) and torch.equal(layer.bias.detach(), torch.zeros(5))
    torch.testing.assert_close(layer.weight().norm(dim=1), torch.ones(5))


def test_data_dependent_init_goes_layer_by_layer():
    torch.manual_seed(0)
    net = torch.nn.Sequential(WNLinear(5, 8), torch.nn.ReLU(), WNLinear(8, 3))
    x = torch.randn(500, 5) * 10
    data_dependent_init(net, x)
    y = net(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0, correction=0), torch.ones(3), atol=1e-4, rtol=0)


def test_transposed_conv_doubles_size():
    assert WNConvTranspose2d(3, 2, 5)(torch.randn(2, 3, 4, 4)).shape == (2, 2, 8, 8)

"""Every model family builds from its preset and has the paper's shapes (tiny widths on CPU)."""
import pytest
import torch
from helpers import TINY_MODELS, tiny, tiny_imagenet_dcgan

from igan.config import FEATURE_LAYERS, ConfigError, apply_overrides
from igan.layers import MinibatchDiscrimination
from igan.models import Discriminator, build_models
from igan.models.common import minibatch_head
from igan.presets import get_preset

TINY = TINY_MODELS


@pytest.mark.parametrize("preset", list(TINY))
def test_shapes(preset):
    cfg = tiny(preset)
    G, D = build_models(cfg)
    x = G(torch.rand(4, cfg.model.z_dim))
    shape = (4, 2) if cfg.model.name == "toy_mlp" else (4, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    assert x.shape == shape
    logits, feats = D(x)
    assert logits.shape == (4, cfg.data.num_classes if cfg.techniques.semi_supervised else 1)
    assert feats.dim() == 2 and feats.shape[0] == 4


def test_output_ranges():
    G, _ = build_models(tiny("digits"))
    x = G(torch.rand(8, 100))
    assert x.min() >= 0 and x.max() <= 1                # sigmoid output for [0, 1] pixels
    G, _ = build_models(tiny("cifar10"))
    x = G(torch.rand(8, 100))
    assert x.min() >= -1 and x.max() <= 1               # tanh output


def test_weight_norm_scale_trainable_only_in_last_layers():
    G, D = build_models(get_preset("digits"))
    d_g = [n for n, p in D.named_parameters() if n.endswith(".g") and p.requires_grad]
    g_g = [n for n, p in G.named_parameters() if n.endswith(".g") and p.requires_grad]
    assert d_g == ["out.g"] and g_g == ["out.g"]


@pytest.mark.parametrize("name", ["imagenet_authors", "imagenet_dcgan"])
def test_vbn_generator_samples_do_not_depend_on_batch(name):
    cfg = tiny("imagenet128") if name == "imagenet_authors" else tiny_imagenet_dcgan()
    G, _ = build_models(cfg)
    G.eval()  # sampling: the authors' noise channels are then a function of each row's z
    z = torch.rand(3, cfg.model.z_dim)
    torch.testing.assert_close(G(z)[:1], G(z[:1]))
    assert G.reference_z.shape == (3, cfg.model.z_dim)


def test_same_seed_same_models():
    a, _ = build_models(tiny("digits"))
    b, _ = build_models(tiny("digits"))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_fm_layer_choice():
    cfg = apply_overrides(tiny("digits"), ["techniques.fm_layer=0"])
    _, D = build_models(cfg)
    assert D(torch.rand(2, 1, 8, 8))[1].shape == (2, 16)


@pytest.mark.parametrize("preset", list(TINY))
def test_feature_layer_table_matches_the_discriminator(preset, monkeypatch):
    # validate() rejects a bad fm_layer from FEATURE_LAYERS without building D; the count must be
    # the number of layers D really offers, or valid indices would be refused (or bad ones pass).
    cfg = tiny(preset)
    offered, original = [], Discriminator.pick_feature

    def counting_pick_feature(self, hidden):
        offered.append(len(hidden))
        return original(self, hidden)

    monkeypatch.setattr(Discriminator, "pick_feature", counting_pick_feature)
    G, D = build_models(cfg)
    D(G(torch.rand(4, cfg.model.z_dim)))
    assert offered == [FEATURE_LAYERS[cfg.model.name](cfg.model.d_widths)]
    last = offered[0] - 1
    apply_overrides(cfg, [f"techniques.fm_layer={last}", f"techniques.fm_layer={-offered[0]}"])
    with pytest.raises(ConfigError, match=rf"fm_layer={last + 1} is out of range: .* \(allowed: -{last + 1}..{last}\)"):
        apply_overrides(cfg, [f"techniques.fm_layer={last + 1}"])


def test_discriminator_rejects_a_bad_fm_layer_in_a_hand_built_config():
    cfg = tiny("digits")
    cfg.techniques.fm_layer = 5  # set directly, past validate()
    _, D = build_models(cfg)
    with pytest.raises(ValueError, match="fm_layer=5"):
        D(torch.rand(2, 1, 8, 8))


def test_mbd_layer_feeds_minibatch_discrimination_from_that_hidden_layer():
    cfg = apply_overrides(get_preset("ring8"), ["model.d_widths=[6,4]", "techniques.mbd_kernels=3",
                                                 "techniques.mbd_dim=2", "techniques.mbd_layer=0"])
    _, D = build_models(cfg)
    assert D.mbd.T.shape == (6, 3 * 2)                  # sized for the first hidden layer
    x = torch.randn(5, 2)
    h0 = torch.nn.functional.leaky_relu(D.layers[0](x), 0.2)
    h1 = torch.nn.functional.leaky_relu(D.layers[1](h0), 0.2)
    m = (h0 @ D.mbd.T).view(5, 3, 2)
    o = torch.exp(-(m[:, None] - m[None]).abs().sum(-1)).sum(1) - 1.0 + D.mbd.bias  # self excluded
    torch.testing.assert_close(D(x)[0], D.out(torch.cat([h1, o], 1)))
    # the default (-1) is the last hidden layer, as before the option existed
    _, D_last = build_models(apply_overrides(cfg, ["techniques.mbd_layer=-1"]))
    assert D_last.mbd.T.shape == (4, 3 * 2)
    # the MNIST/digits MLP: its first hidden layer (16 units) feeds MBD, the output sees 8 + 3
    _, D_mlp = build_models(apply_overrides(tiny("digits"), ["techniques.minibatch_discrimination=true",
                                                             "techniques.mbd_kernels=3", "techniques.mbd_layer=0"]))
    assert D_mlp.mbd.T.shape == (16, 3 * 5) and D_mlp(torch.rand(4, 1, 8, 8))[0].shape == (4, 10)


def test_minibatch_head_width_on_and_off():
    on = apply_overrides(get_preset("ring8"), ["techniques.mbd_kernels=7", "techniques.mbd_dim=3"])
    mbd, width = minibatch_head(on, 20)
    assert isinstance(mbd, MinibatchDiscrimination) and width == 20 + 7
    assert (mbd.in_features, mbd.num_kernels, mbd.kernel_dim) == (20, 7, 3)
    assert mbd(torch.rand(4, 20)).shape == (4, width)
    off = apply_overrides(on, ["techniques.minibatch_discrimination=false"])
    assert minibatch_head(off, 20) == (None, 20)
    assert minibatch_head(off, 20, [6, 20]) == (None, 20)
    # fed from a hidden layer picked by mbd_layer: sized for that layer, the head width unchanged
    mbd, width = minibatch_head(apply_overrides(on, ["techniques.mbd_layer=0"]), 20, [6, 20])
    assert mbd.in_features == 6 and width == 27
    for preset in TINY:  # every discriminator's output layer reads the head's width
        cfg = tiny(preset)
        _, D = build_models(cfg)
        # the authors' ImageNet D: two features per kernel (closeness to the real and the generated rows)
        per_kernel = 2 if cfg.model.name == "imagenet_authors" else 1
        kernels = cfg.techniques.mbd_kernels if cfg.techniques.minibatch_discrimination else 0
        assert (D.mbd is not None) == cfg.techniques.minibatch_discrimination
        assert D.out.in_features == cfg.model.d_widths[-1] + per_kernel * kernels


def test_mbd_layer_out_of_range_or_unsupported_is_rejected():
    with pytest.raises(ValueError, match=r"mbd_layer=2 .*\(allowed: -2\.\.1\)"):
        build_models(apply_overrides(get_preset("ring8"), ["model.d_widths=[6,4]", "techniques.mbd_layer=2"]))
    with pytest.raises(ConfigError, match="techniques.mbd_layer' must be -1 for model.name=cifar_conv"):
        apply_overrides(get_preset("cifar10"), ["techniques.mbd_layer=0"])


# -- the authors' initialisations ---------------------------------------------------------------
def _init_batch(cfg, n=500):
    size = (n, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    return torch.rand(size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("preset", ["cifar10", "svhn"])
def test_conv_output_layers_start_at_std_0_1_and_generator_weights_at_0_05(preset):
    """The authors' CIFAR/SVHN init: data-dependent init_stdv 0.1 on D's last dense and G's last
    deconv (their pre-activations on the init batch have std 0.1), N(0, 0.05^2) weights in G's
    batch-normed layers."""
    from igan.layers import data_dependent_init

    cfg = apply_overrides(tiny(preset), ["techniques.minibatch_discrimination=true", "techniques.mbd_kernels=6"])
    torch.manual_seed(0)
    G, D = build_models(cfg)
    for layer in [G.fc] + [m for m in G.blocks if isinstance(m, torch.nn.ConvTranspose2d)]:
        assert abs(layer.weight.std().item() - 0.05) < 0.005 and abs(layer.weight.mean().item()) < 0.005
    x, z = _init_batch(cfg, 200) * 2 - 1, torch.rand(200, cfg.model.z_dim)
    torch.manual_seed(5)
    data_dependent_init(D, x)
    data_dependent_init(G, z)
    seen = {}
    D.out.register_forward_hook(lambda m, i, o: seen.update(d=o))
    G.out.register_forward_hook(lambda m, i, o: seen.update(g=o))
    torch.manual_seed(5)  # the init pass's dropout masks again: the same pass, with the new g and bias
    D(x)
    G(z)
    torch.testing.assert_close(seen["d"].std(0, correction=0), torch.full((cfg.data.num_classes,), 0.1),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(seen["g"].std((0, 2, 3), correction=0), torch.full((cfg.data.channels,), 0.1),
                               atol=1e-5, rtol=0)


def test_mnist_generator_output_is_not_data_initialised_and_hidden_weights_are_glorot():
    """The authors' MNIST G: Lasagne's Glorot-uniform dense layers, the output l2-normalised with
    scale 1 and bias 0, left alone by the init pass."""
    from igan.layers import data_dependent_init

    cfg = get_preset("mnist")
    torch.manual_seed(0)
    G, _ = build_models(cfg)
    for layer in (m for m in G.hidden if isinstance(m, torch.nn.Linear)):
        fan_out, fan_in = layer.weight.shape
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.99 * bound
    data_dependent_init(G, torch.rand(100, cfg.model.z_dim))
    assert torch.equal(G.out.g.detach(), torch.ones(784)) and torch.equal(G.out.bias.detach(), torch.zeros(784))


def test_mbd_is_weight_normed_with_the_rest_of_d():
    cfg = apply_overrides(tiny("cifar10"), ["techniques.minibatch_discrimination=true", "techniques.mbd_kernels=6"])
    assert build_models(cfg)[1].mbd.initialises_from_data
    off = apply_overrides(cfg, ["techniques.weight_norm=false"])
    assert not build_models(off)[1].mbd.initialises_from_data
    assert not build_models(get_preset("ring8"))[1].mbd.initialises_from_data  # toy: W = T, as before

import pytest

from igan.config import Config, ConfigError, apply_overrides, bounds, dump_yaml
from igan.presets import load_yaml
from igan.presets import get_preset, preset_names


def test_presets_are_valid_and_follow_paper_recipes():
    assert set(preset_names()) == {"digits", "mnist", "cifar10", "svhn", "imagenet128", "ring8", "grid25",
                                   "cifar10_mbd", "cifar10_mbd_no_vbn", "cifar10_mbd_no_l_ha", "cifar10_mbd_no_ls",
                                   "cifar10_mbd_no_l", "cifar10_mbd_no_mbf"}
    cifar = get_preset("cifar10")
    assert cifar.techniques.fm_norm == "l1" and cifar.data.labels_per_class == 400 and cifar.train.epochs == 1200
    assert cifar.model.d_widths == [96, 192] and cifar.optim.decay_start_epoch == 800
    svhn = get_preset("svhn")
    assert svhn.model.d_widths == [64, 128] and svhn.train.epochs == 900 and svhn.data.labels_per_class == 100
    mnist = get_preset("mnist")
    assert mnist.model.d_widths == [1000, 500, 250, 250, 250] and mnist.techniques.fm_norm == "l2"
    imnet = get_preset("imagenet128")
    assert (imnet.techniques.mbd_kernels, imnet.techniques.mbd_dim) == (300, 50)
    assert imnet.techniques.real_label == 0.75 and imnet.techniques.virtual_batch_norm
    assert get_preset("digits").data.labels_per_class == 5


def test_overrides_coerce_types():
    cfg = apply_overrides(get_preset("digits"), ["techniques.real_label=0.9", "model.d_widths=[64, 32]",
                                                 "techniques.minibatch_discrimination=true", "train.epochs=3"])
    assert cfg.techniques.real_label == 0.9 and cfg.model.d_widths == [64, 32]
    assert cfg.techniques.minibatch_discrimination is True and cfg.train.epochs == 3


@pytest.mark.parametrize("override,message", [
    ("techniques.nope=1", "unknown config key 'techniques.nope'"),
    ("nosection.x=1", "unknown config section 'nosection'"),
    ("techniques.fm_norm=l3", "allowed: l2, l1"),
    ("techniques.real_label=0.2", "out of range; allowed: [0.5, 1.0]"),
    ("train.epochs=ten", "must be of type int"),
    ("train.epochs", "section.key=value"),
])
def test_bad_overrides_name_the_key_and_allowed_values(override, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides(get_preset("digits"), [override])
    assert message in str(err.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="allowed: digits"):
        get_preset("celeba")


def test_yaml_round_trip_and_preset_key(tmp_path):
    cfg = apply_overrides(get_preset("svhn"), ["train.seed=7"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_yaml(path) == cfg
    path.write_text("preset: ring8\ntrain:\n  epochs: 5\n")
    loaded = load_yaml(path)
    assert loaded.model.name == "toy_mlp" and loaded.train.epochs == 5
    path.write_text("train:\n  epoch: 5\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        load_yaml(path)


def test_flat_params():
    flat = Config().flat()
    assert flat["techniques.fm_norm"] == "l2" and flat["preset"] == "digits"
    assert all(k.count(".") == 1 for k in flat if k != "preset")


def test_bounds_of_a_numeric_key():
    assert bounds("techniques.real_label") == (0.5, 1.0)
    assert bounds("optim.decay_start_epoch") == (-1, None)
    with pytest.raises(ConfigError, match="unknown config section 'nope'"):
        bounds("nope.key")
    with pytest.raises(ConfigError, match="unknown config key 'optim.nope'"):
        bounds("optim.nope")


def test_authors_evaluation_settings():
    """The authors' evaluation: EMA rate 1e-4 on MNIST (as on CIFAR/SVHN), samples with batch-norm
    batch statistics (eval.generator_batch_stats) by default."""
    for name in ("mnist", "cifar10", "svhn"):
        assert get_preset(name).techniques.ema_rate == 1e-4
    assert all(get_preset(name).eval.generator_batch_stats for name in preset_names())

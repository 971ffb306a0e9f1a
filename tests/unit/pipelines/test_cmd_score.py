"""``igan score --data ROOT --split NAME``: the Inception score of a split's real images (the paper's
"real data" row), checked against the formula on the network's probabilities, and its one-line
errors. A tiny CIFAR-10 in the real format, sharded without Ray; untrained Inception weights of the
real layout on 75x75 inputs."""
from __future__ import annotations

import json

import pytest
import torch
from helpers.cli_run import run_cli

PORT = "pt_inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="module")
def cifar_shards(tmp_path_factory):
    """A shard root of a 20-image train / 6-image test CIFAR-10 in the python-pickle format."""
    from helpers.fixtures_formats import make_cifar10
    from pipelines.shard import shard_dataset

    raw = tmp_path_factory.mktemp("cifar_raw")
    make_cifar10(str(raw))
    root = tmp_path_factory.mktemp("cifar_shards")
    shard_dataset("cifar10", str(root), src=str(raw), engine="local", log=lambda m: None)
    return str(root)


@pytest.fixture
def weights_env(no_weights, small_inception_inputs, igan_home, monkeypatch):
    """No weights anywhere but where the test puts them; Inception on 75x75 inputs."""
    return monkeypatch


def test_real_split_score_is_the_formula_on_the_port(cifar_shards, weights_env, inception_tf2015_file, capsys):
    from igan.data.feed import EVAL_BATCH, StreamedSplit
    from igan.data.pixels import to_uint8
    from igan.metrics import get_scorer, inception_score
    from igan.presets import get_preset

    weights_env.setenv("IGAN_INCEPTION_WEIGHTS", str(inception_tf2015_file))
    code, out, err = run_cli(capsys, "score", "--data", cifar_shards, "--split", "train", "--json")
    assert code == 0, err
    lines = out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["scorer_network"] == "inception_tf2015" and result["preset"] == "cifar10" and result["n"] == 20
    assert "scored by inception_tf2015" in lines[0] and "real images" in lines[0]
    cfg = get_preset("cifar10")
    images = next(iter(StreamedSplit(cifar_shards, "train", cfg).batches(EVAL_BATCH)))[0]
    scorer = get_scorer("inception_tf2015", device="cpu")
    feats = scorer.features(to_uint8(images, cfg.data.pixel_range))
    probs = torch.softmax(feats.double() @ scorer.net.fc.weight.detach().double().t(), 1)  # no bias: the authors'
    mean, std = inception_score(probs, splits=10)
    assert result["inception_score"] == pytest.approx(mean, rel=1e-5)
    assert result["inception_score_std"] == pytest.approx(std, rel=1e-3, abs=1e-6)
    code, out, err = run_cli(capsys, "score", "--data", cifar_shards, "--split", "train", "--n", "10", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["n"] == 10, err


@pytest.mark.parametrize("argv,needle", [
    (["--split", "nope"], "no split 'nope'"),
    (["--split", "train"], "IGAN_INCEPTION_WEIGHTS"),                    # no weights anywhere
    (["--split", "train", "--preset", "mnist"], "do not match"),         # 28x28 grey, not CIFAR-10
    (["--split", "train", "--preset", "nosuch"], "unknown preset"),
    ([], "--data ROOT --split NAME"),
])
def test_real_split_errors_are_one_line(argv, needle, cifar_shards, weights_env, capsys):
    code, out, err = run_cli(capsys, "score", "--data", cifar_shards, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


def test_split_with_a_model_uri_is_refused(capsys):
    code, _, err = run_cli(capsys, "score", "models:/igan-digits-generator@latest", "--split", "test")
    assert code == 2 and "without MODEL_URI" in err, err
    code, _, err = run_cli(capsys, "score")
    assert code == 2 and "--data ROOT --split NAME" in err, err


def test_generator_score_in_rounds_names_the_network(weights_env, inception_tf2015_file, capsys):
    """``igan score MODEL_URI``: samples generated and scored in rounds (here of 12), the score of
    them all; the output names the network. The registry is stood in for by a trainer's generator."""
    import igan.evaluation as evaluation
    import pipelines.cmd_sample as cmd_sample
    from helpers import tiny
    from igan.data.pixels import to_uint8
    from igan.metrics import get_scorer, inception_score
    from igan.trainer import Trainer
    from pipelines.registry import generate_samples

    weights_env.setenv("IGAN_INCEPTION_WEIGHTS", str(inception_tf2015_file))
    weights_env.setattr(evaluation, "SCORE_ROUND", 12)
    cfg = tiny("cifar10")
    generator = Trainer(cfg, device="cpu").G.eval()
    weights_env.setattr(cmd_sample, "open_generator", lambda args: ("igan-cifar10-generator", "1", "r", generator, cfg))
    code, out, err = run_cli(capsys, "score", "models:/igan-cifar10-generator/1", "--n", "30", "--seed", "2", "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["scorer_network"] == "inception_tf2015" and result["n"] == 30
    assert "scored by inception_tf2015" in out.splitlines()[0]
    samples = torch.cat([generate_samples(generator, cfg, n, seed=2 + evaluation.ROUND_SEED_STEP * k)
                         for k, n in enumerate([12, 12, 6])])
    probs = get_scorer("inception_tf2015", device="cpu").probabilities(to_uint8(samples, cfg.data.pixel_range))
    mean, std = inception_score(probs, splits=10)
    assert result["inception_score"] == pytest.approx(mean, rel=1e-5)
    assert result["inception_score_std"] == pytest.approx(std, rel=1e-3, abs=1e-6)

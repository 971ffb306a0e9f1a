"""igan.metrics: every number checked against a direct formula."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import igan.metrics as M
from igan.metrics import (fid_from_features, frechet_distance, get_scorer, inception_score,
                          mode_coverage, ssl_test_error)


# -- inception_score ----------------------------------------------------------------------
def _reference_is(p: np.ndarray, splits: int) -> tuple[float, float]:
    """The authors' loop written out with plain numpy (no zero entries allowed)."""
    scores = []
    n = len(p)
    for i in range(splits):
        part = p[(i * n // splits):((i + 1) * n // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_uniform_is_one():
    mean, std = inception_score(np.full((100, 7), 1 / 7), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 10, 1000])
def test_inception_score_one_hot_evenly_is_k(k):
    p = np.eye(k)[np.arange(5 * k) % k]  # every split sees each class equally often
    mean, std = inception_score(torch.from_numpy(p), splits=5)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_reference_on_random_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1003, 13)) * 3  # 1003 rows: uneven contiguous splits
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for splits in (1, 3, 10):
        assert inception_score(p, splits) == pytest.approx(_reference_is(p, splits), rel=1e-10)
    assert inception_score(torch.tensor(p, dtype=torch.float32), 10) == pytest.approx(
        _reference_is(p, 10), rel=1e-5)


def test_inception_score_splits_are_contiguous_not_shuffled():
    # first half one-hot on class 0, second half on class 1: each of 2 contiguous splits
    # is collapsed (score 1); a single split sees 2 classes (score 2).
    p = np.eye(2)[np.repeat([0, 1], 50)]
    assert inception_score(p, splits=2) == pytest.approx((1.0, 0.0))
    assert inception_score(p, splits=1) == pytest.approx((2.0, 0.0))
    # splits of 4 rows with 2 classes, 4 rows with 4 classes -> scores 2 and 4: mean 3, std 1
    q = np.eye(4)[[0, 1, 0, 1, 0, 1, 2, 3]]
    assert inception_score(q, splits=2) == pytest.approx((3.0, 1.0))


def test_inception_score_rejects_bad_input():
    with pytest.raises(ValueError, match="logits"):
        inception_score(np.random.default_rng(0).normal(size=(20, 3)), 2)
    with pytest.raises(ValueError, match="per split"):
        inception_score(np.full((3, 2), 0.5), splits=10)
    with pytest.raises(ValueError):
        inception_score(np.full(10, 0.1), splits=1)


# -- FID ----------------------------------------------------------------------------------
def test_frechet_distance_identical_gaussians_is_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 20))
    sigma, mu = a.T @ a / 50, rng.normal(size=20)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-10)  # 7.25 + 4 + 1 + 0


def test_frechet_distance_singular_covariances():
    sigma = np.diag([1.0, 0.0, 0.0])  # rank 1: sqrtm of the product is singular
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # handled inside, nothing escapes
        got = frechet_distance(np.zeros(3), sigma, np.ones(3), 4 * sigma)
    assert np.isfinite(got) and got == pytest.approx(3.0 + 1.0, abs=1e-3)
    rng = np.random.default_rng(3)
    low_rank = rng.normal(size=(5, 64))  # 5 samples of 64 features: rank-4 covariances
    a, b = M.feature_statistics(low_rank), M.feature_statistics(low_rank + 1.0)
    assert frechet_distance(*a, *b) == pytest.approx(64.0, abs=1e-2)  # same spread, shifted mean


def test_fid_from_features_matches_population_formula():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(20000, 4))
    fake = rng.normal(size=(20000, 4)) * np.array([1.0, 2.0, 1.0, 0.5]) + np.array([1.0, 0.0, 0.0, 0.0])
    expected = 1.0 + (1 - 2) ** 2 + (1 - 0.5) ** 2
    assert fid_from_features(real, fake) == pytest.approx(expected, abs=0.08)
    mu, s = M.feature_statistics(fake)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    same = torch.from_numpy(real[:500])
    assert fid_from_features(same, same) == pytest.approx(0.0, abs=1e-6)


# -- mode_coverage ------------------------------------------------------------------------
def _points_at(centers: np.ndarray, counts: list[int], offset: float) -> np.ndarray:
    """counts[m] points at distance ``offset`` (along x) from center m."""
    return np.concatenate([np.repeat(c[None] + [offset, 0.0], n, 0) for c, n in zip(centers, counts)])


def test_mode_coverage_exact_counts_2500():
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    hq = _points_at(centers, [20, 19, 1000, 0], offset=0.05)       # within 3*0.02=0.06
    lq = _points_at(centers, [0, 500, 0, 961], offset=0.07)        # outside 3 std
    samples = np.concatenate([hq, lq])
    assert len(samples) == 2500
    captured, fraction = mode_coverage(samples, centers, std=0.02)
    assert captured == 2  # modes 0 (exactly 20) and 2; mode 1 has 19 good ones, mode 3 none
    assert fraction == pytest.approx(1039 / 2500)


def test_mode_coverage_threshold_scales_with_sample_count():
    centers = np.array([[0.0, 0.0], [5.0, 5.0]])
    far = np.full((1, 2), 100.0)
    # 5,000 samples: threshold 40
    s = np.concatenate([_points_at(centers, [40, 39], 0.0), np.repeat(far, 4921, 0)])
    assert mode_coverage(s, centers, std=0.1)[0] == 1
    # 250 samples: threshold 2
    s = np.concatenate([_points_at(centers, [2, 1], 0.0), np.repeat(far, 247, 0)])
    captured, fraction = mode_coverage(torch.from_numpy(s), torch.from_numpy(centers), std=0.1)
    assert (captured, fraction) == (1, pytest.approx(3 / 250))


def test_mode_coverage_std_boundary_is_inclusive():
    centers = np.array([[0.0, 0.0]])
    on_edge = np.array([[1.5, 0.0], [0.0, -1.5], [0.9, 1.2]])  # |x| = 3 * 0.5 exactly
    outside = np.array([[1.5 + 1e-9, 0.0]])
    assert mode_coverage(on_edge, centers, std=0.5)[1] == 1.0
    assert mode_coverage(outside, centers, std=0.5) == (0, 0.0)


def test_mode_coverage_on_true_mixture_captures_all():
    from igan.data.toy import TOY_STD, load_toy_split, toy_centers
    for name in ("ring8", "grid25"):
        points, _ = load_toy_split(name, "test")
        captured, fraction = mode_coverage(points, toy_centers(name), TOY_STD[name])
        assert captured == len(toy_centers(name))
        assert fraction == pytest.approx(1 - np.exp(-4.5), abs=0.02)  # P(chi2_2 <= 9)


# -- ssl_test_error -----------------------------------------------------------------------
def test_ssl_test_error_on_fake_classifier():
    x = torch.arange(1234, dtype=torch.float32)[:, None]
    labels = torch.arange(1234) % 3
    calls = []

    def classify(batch):
        assert not torch.is_grad_enabled()
        calls.append(len(batch))
        pred = batch[:, 0].long() % 3
        pred[batch[:, 0].long() % 10 == 0] = (pred[batch[:, 0].long() % 10 == 0] + 1) % 3  # wrong on 1/10
        return torch.nn.functional.one_hot(pred, 3).float() * 5 - 1

    err = ssl_test_error(classify, x, labels.numpy(), batch_size=500)
    assert err == pytest.approx(124 / 1234)  # 0, 10, ..., 1230
    assert calls == [500, 500, 234]


def test_ssl_test_error_with_module():
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert ssl_test_error(model, x, torch.tensor([0, 1, 1, 1]), batch_size=3) == 0.25


# -- Inception-v3 scorer ------------------------------------------------------------------
@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    """Randomly initialised weights of both kinds, with a large random output bias."""
    from igan.metrics.inception_net import build_inception
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("inception")
    paths = {}
    for kind in ("tf2015", "torchvision"):
        net = build_inception(kind)
        state = net.state_dict()
        state["fc.bias"] = torch.randn_like(state["fc.bias"]) * 5
        if kind == "torchvision":  # torchvision's file also holds the auxiliary head
            state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
        paths[kind] = folder / f"{kind}.pth"
        torch.save(state, paths[kind])
    return paths


@pytest.mark.parametrize("kind,classes", [("tf2015", 1008), ("torchvision", 1000)])
def test_inception_scorer_from_env_var(inception_files, monkeypatch, kind, classes):
    import igan.metrics.inception_net as inet
    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", str(inception_files[kind]))
    scorer = get_scorer("inception", kind=kind, device="cpu", batch_size=2)
    assert isinstance(scorer, M.Scorer) and scorer.num_classes == classes
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    assert scorer._prepare(images[:, :1]).shape == (3, 3, 299, 299)
    monkeypatch.setattr(inet, "INPUT_SIZE", 75)  # the smallest valid input keeps the test fast
    probs, feats = scorer.probabilities_and_features(images)  # batches of 2 and 1
    assert probs.shape == (3, classes) and feats.shape == (3, 2048)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    torch.testing.assert_close(scorer.probabilities(images[:1]), probs[:1])
    fc = scorer.net.fc
    logits = feats.double() @ fc.weight.double().t()
    if kind == "torchvision":
        logits = logits + fc.bias.double()  # tf2015: the authors' score drops the bias
    assert torch.allclose(probs.double(), torch.softmax(logits, 1), atol=1e-6)
    # the same images as floats in [-1, 1] (grey images too) give the same outputs
    scale = (lambda x: (x - 128) / 128) if kind == "tf2015" else (lambda x: x / 127.5 - 1)
    both = torch.cat([scale(images[:1].float()), scale(images[1:2, :1].float()).expand(-1, 3, -1, -1)])
    expected = torch.cat([feats[:1], scorer.features(images[1:2, :1])])  # uint8 grey image
    torch.testing.assert_close(scorer.features(both), expected, atol=1e-6, rtol=1e-4)


def test_inception_weights_missing_raise_clear_error(tmp_path, monkeypatch):
    from igan.metrics.inception_net import InceptionScorer, InceptionWeightsNotFound
    missing = tmp_path / "nowhere.pth"
    monkeypatch.setenv("IGAN_INCEPTION_WEIGHTS", str(missing))
    with pytest.raises(FileNotFoundError) as err:
        InceptionScorer(kind="tf2015")
    assert isinstance(err.value, InceptionWeightsNotFound)
    msg = str(err.value)
    assert "IGAN_INCEPTION_WEIGHTS" in msg and str(missing) in msg
    assert "pt_inception-2015-12-05-6726825d.pth" in msg
    monkeypatch.delenv("IGAN_INCEPTION_WEIGHTS")
    monkeypatch.setenv("IGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InceptionWeightsNotFound, match="inception_v3_google-0cc3c7bd.pth"):
        InceptionScorer(kind="torchvision")
    with pytest.raises(InceptionWeightsNotFound, match="nowhere.pth"):
        InceptionScorer(weights=missing)
    with pytest.raises(InceptionWeightsNotFound, match="pt_inception-2015-12-05-6726825d.pth"):
        InceptionScorer(weights=tmp_path, kind="tf2015")  # a folder without the file


def test_inception_kind_mismatch_is_named(inception_files):
    from igan.metrics.inception_net import load_inception
    with pytest.raises(ValueError, match="kind='tf2015'"):
        load_inception(inception_files["tf2015"], kind="torchvision")


def test_fid_blocks_differ_from_torchvision_only_in_pool_branch():
    from torchvision.models.inception import InceptionA, InceptionE
    from igan.metrics.inception_net import FIDInceptionA, FIDInceptionE
    torch.manual_seed(0)
    x = torch.randn(1, 1280, 5, 5)
    ref, fid_max = InceptionE(1280).eval(), FIDInceptionE(1280, "max").eval()
    fid_max.load_state_dict(ref.state_dict())
    with torch.no_grad():
        a, b = ref(x), fid_max(x)
        torch.testing.assert_close(a[:, :-192], b[:, :-192])  # 320 + 768 + 768 branch channels
        pool = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
        torch.testing.assert_close(b[:, -192:], fid_max.branch_pool(pool))
    xa = torch.randn(1, 192, 5, 5)
    ref_a, fid_a = InceptionA(192, 32).eval(), FIDInceptionA(192, 32).eval()
    fid_a.load_state_dict(ref_a.state_dict())
    with torch.no_grad():
        a, b = ref_a(xa), fid_a(xa)
        torch.testing.assert_close(a[:, :-32], b[:, :-32])
        ones = torch.nn.functional.avg_pool2d(torch.ones(1, 1, 5, 5), 3, 1, 1)  # 4/9 at corners
        valid = torch.nn.functional.avg_pool2d(xa, 3, 1, 1) / ones  # average over valid pixels
        torch.testing.assert_close(b[:, -32:], fid_a.branch_pool(valid))
        assert not torch.allclose(a[:, -32:], b[:, -32:])


def test_resize_bilinear_tf1_formula():
    from igan.metrics.inception_net import resize_bilinear_tf1
    x = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])
    y = resize_bilinear_tf1(x, 4)  # source coordinates 0, 0.5, 1, 1.5 -> clamped at index 1
    row = torch.tensor([1.0, 2.0, 3.0, 3.0])
    expected = torch.stack([row, row + 2, row + 4, row + 4])
    torch.testing.assert_close(y[0, 0], expected)


# -- registry -----------------------------------------------------------------------------
def test_scorer_registry():
    assert {"inception", "inception_tf2015", "domain"} <= set(M.scorer_names())
    with pytest.raises(ValueError, match="registered: .*domain"):
        get_scorer("nope")
    with pytest.raises(ValueError, match="already registered"):
        M.register_scorer("domain")(lambda: None)

    class Const:
        def probabilities(self, images):
            return torch.full((len(images), 4), 0.25)

        def features(self, images):
            return torch.zeros(len(images), 3)

    M.register_scorer("const-test", replace=True)(Const)
    scorer = get_scorer("const-test")
    assert isinstance(scorer, M.Scorer)
    assert inception_score(scorer.probabilities(torch.zeros(20, 1)), 2) == pytest.approx((1.0, 0.0))


# -- domain classifier --------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from igan.data.digits import load_digits_split
    from igan.data.pixels import to_model_range

    def load(split):
        x, y = load_digits_split(split)
        return to_model_range(torch.from_numpy(x)[:, None], "unit"), torch.from_numpy(y)
    return load("train"), load("test")


@pytest.fixture
def one_thread():
    """Train on one thread (the machine is shared), restoring the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_domain_classifier_on_digits_and_cache(digits, tmp_path, monkeypatch, one_thread):
    import igan.metrics.domain_classifier as dc
    (x, y), (xt, yt) = digits
    monkeypatch.setenv("IGAN_CACHE", str(tmp_path))
    model = get_scorer("domain", key="digits/train", images=x, labels=y, num_classes=10)
    assert model.accuracy(xt, yt) >= 0.95
    probs, feats = model.probabilities(xt), model.features(xt)
    assert probs.shape == (len(xt), 10) and feats.shape == (len(xt), model.feature_dim)
    assert torch.allclose(probs.sum(1), torch.ones(len(xt)), atol=1e-5)
    # a real set scores close to its class count; one class only scores 1
    assert inception_score(probs, splits=1)[0] > 8.0
    files = list((tmp_path / "domain_classifier").glob("digits_train-*.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of using the cache")
    monkeypatch.setattr(dc, "train_domain_classifier", no_training)
    again = dc.load_or_train_domain_classifier("digits/train", x, y, 10)
    torch.testing.assert_close(again.probabilities(xt), probs)
    assert files[0].stat().st_mtime_ns == mtime
    # other data (or another key) is another cache entry, so it would train
    with pytest.raises(AssertionError, match="trained again"):
        dc.load_or_train_domain_classifier("digits/train", x[:-1], y[:-1], 10)
    with pytest.raises(AssertionError, match="trained again"):
        dc.load_or_train_domain_classifier("digits/train", x, y, 10, cache_dir=tmp_path / "other")


def test_domain_classifier_unreadable_cache_is_retrained(tmp_path, one_thread):
    import igan.metrics.domain_classifier as dc
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    path = dc.cache_path("tiny", x, y, 10, tmp_path, epochs=1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        model = dc.load_or_train_domain_classifier("tiny", x, y, 10, cache_dir=tmp_path, epochs=1)
    again = dc.load_or_train_domain_classifier("tiny", x, y, 10, cache_dir=tmp_path, epochs=1)
    torch.testing.assert_close(again.features(x), model.features(x))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_domain_classifier_shapes_mnist_svhn(shape, one_thread):
    from igan.metrics.domain_classifier import DomainClassifier, train_domain_classifier
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, *shape, generator=g)
    y = torch.arange(40) % 10
    x[y == 3] += 1.0  # something learnable
    model = train_domain_classifier(x, y, 10, epochs=1, seed=0)
    assert isinstance(model, DomainClassifier)
    assert model.probabilities(x).shape == (40, 10)
    assert model.features(x).shape == (40, model.feature_dim)
    twin = train_domain_classifier(x, y, 10, epochs=1, seed=0)
    torch.testing.assert_close(twin.probabilities(x), model.probabilities(x))  # seeded

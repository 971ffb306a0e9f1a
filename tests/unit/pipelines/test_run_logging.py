"""pipelines.run_logging's scorer params: the network that scores a run is logged as the MLflow param
``eval.scorer_network`` by ``igan train``'s driver and by each Tune trial, and the config the workers
get names that network instead of ``auto``. Against a local sqlite MLflow store; Ray is not started
(its steps are stood in for)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from igan.config import apply_overrides
from igan.presets import get_preset

PORT = "pt_inception-2015-12-05-6726825d.pth"


@pytest.fixture
def port_in_cache(no_weights, inception_tf2015_file):
    """The port's weights (untrained, real layout) in a private ``$IGAN_CACHE/inception``, alone."""
    (no_weights / "inception").mkdir(parents=True)
    (no_weights / "inception" / PORT).symlink_to(inception_tf2015_file)


def _params(uri: str, run_id: str) -> dict:
    from pipelines.tracking import make_client

    return make_client(uri).get_run(run_id).data.params


def test_scorer_network_params_resolve_auto(port_in_cache):
    from pipelines.run_logging import SCORER_NETWORK_PARAM, scorer_network_params

    params, pinned = scorer_network_params(get_preset("cifar10"))
    assert params == {SCORER_NETWORK_PARAM: "inception_tf2015"} and pinned.eval.scorer == "inception_tf2015"
    named = apply_overrides(get_preset("cifar10"), ["eval.scorer=domain"])
    assert scorer_network_params(named) == ({SCORER_NETWORK_PARAM: "domain"}, named)
    assert scorer_network_params(get_preset("digits"))[0] == {SCORER_NETWORK_PARAM: "domain"}


class _Result:
    checkpoint = None


def test_run_training_logs_the_network_and_trains_with_it(port_in_cache, tmp_path, monkeypatch):
    import pipelines.train as train

    launched = {}

    def launch(ray, cfg, *args, **kwargs):
        launched["cfg"] = cfg
        return _Result()

    monkeypatch.setattr(train, "ensure_data", lambda cfg, data, log=print: None)
    monkeypatch.setattr(train, "init_ray", lambda address, verbose=False: object())
    monkeypatch.setattr(train, "RayCluster", lambda ray: None)
    monkeypatch.setattr(train, "scaling", lambda opts, cluster, log: (1, 1.0, 1))
    monkeypatch.setattr(train, "_launch", launch)
    uri = f"sqlite:///{tmp_path}/m.db"
    opts = train.TrainOptions(preset="cifar10", overrides=["train.epochs=1"], storage=str(tmp_path / "storage"),
                              tracking_uri=uri, name="job", register=False)
    summary = train.run_training(opts, log=lambda line: None)
    params = _params(uri, summary["run_id"])
    assert params["eval.scorer_network"] == "inception_tf2015" and params["eval.scorer"] == "auto"
    assert launched["cfg"].eval.scorer == "inception_tf2015"  # what every worker scores with
    record = json.loads((Path(tmp_path) / "storage" / "job" / "igan_job.json").read_text())
    assert record["config"]["eval"]["scorer"] == "inception_tf2015"  # a resumed job keeps that network


def test_trial_logs_the_network_and_trains_with_it(port_in_cache, tmp_path, monkeypatch):
    from ray import tune

    from pipelines.tracking import RunTracker
    from pipelines.tune import trials

    class Context:
        def get_trial_id(self):
            return "t0001"

        def get_trial_name(self):
            return "trial_t0001"

    monkeypatch.setattr(tune, "get_context", lambda: Context())
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    uri = f"sqlite:///{tmp_path}/m.db"
    with RunTracker(uri, "igan-test-trials", run_name="search") as parent:
        ctx = {"config": get_preset("cifar10").to_dict(), "keys": [], "tied": {}, "tracking_uri": uri,
               "experiment_id": parent.experiment_id, "parent_run_id": parent.run_id,
               "experiment": "igan-test-trials", "name": "search"}
        cfg, tracker, trial_id, resume_from = trials._open_trial({}, ctx)
        tracker.finish()
    assert trial_id == "t0001" and resume_from is None
    params = _params(uri, tracker.run_id)
    assert params["eval.scorer_network"] == "inception_tf2015" and params["eval.scorer"] == "auto"
    assert cfg.eval.scorer == "inception_tf2015"

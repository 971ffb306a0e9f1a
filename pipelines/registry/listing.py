"""``igan models``: the registered igan models with their versions, aliases, source runs and the
runs' headline metrics."""
from __future__ import annotations

from pipelines.registry.lookup import _client, _get_registered, _registered_names, _version_numbers
from pipelines.registry.names import LATEST

SUMMARY_METRICS = tuple(f"{role}_{name}" for role in ("val", "test")
                        for name in ("ssl_error", "inception_score", "modes_captured", "high_quality_fraction"))


def list_models(tracking_uri: str, name: str | None = None, with_metrics: bool = True) -> list[dict]:
    """Registered igan models (names starting ``igan-``), or only ``name``: for each, ``name``,
    ``aliases`` (alias -> version) and ``versions`` (newest first), each with ``version``,
    ``aliases``, ``run_id``, ``created`` (ms since the epoch), ``status``, ``uri`` and, with
    ``with_metrics``, the source run's latest :data:`SUMMARY_METRICS` that it logged."""
    client = _client(tracking_uri)
    if name is not None:
        models = [_get_registered(client, name)]
    else:
        models = [client.get_registered_model(n) for n in _registered_names(client) if n.startswith("igan-")]
    run_metrics: dict[str, dict] = {}
    out = []
    for model in models:
        aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
        numbers = _version_numbers(client, model.name)
        if numbers:
            aliases[LATEST] = numbers[-1]
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        versions = []
        for mv in sorted(client.search_model_versions(f"name='{model.name}'"), key=lambda v: -int(v.version)):
            entry = {"version": str(mv.version), "aliases": sorted(by_version.get(str(mv.version), [])),
                     "run_id": mv.run_id, "created": mv.creation_timestamp, "status": mv.status,
                     "uri": f"models:/{model.name}/{mv.version}"}
            if with_metrics and mv.run_id:
                if mv.run_id not in run_metrics:
                    run_metrics[mv.run_id] = _summary_metrics(client, mv.run_id)
                entry["metrics"] = run_metrics[mv.run_id]
            versions.append(entry)
        out.append({"name": model.name, "aliases": {a: str(v) for a, v in sorted(aliases.items())},
                    "versions": versions})
    return out


def _summary_metrics(client, run_id: str) -> dict[str, float]:
    from mlflow.exceptions import MlflowException

    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:
        return {}
    return {k: float(metrics[k]) for k in SUMMARY_METRICS if k in metrics}

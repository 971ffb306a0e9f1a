"""Model URIs to registry entries: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and
``runs:/RUN_ID/<kind>`` resolved to a name, version, run and logged model (one-line UserErrors that
list what exists), and a resolved model's folder downloaded."""
from __future__ import annotations

import re

from pipelines.errors import UserError
from pipelines.registry.lookup import _check_version, _client, _get_registered, _newest, _version_numbers
from pipelines.registry.names import LATEST

_MODELS_ALIAS = re.compile(r"^models:/([^/@]+)@([^/@]+)$")
_MODELS_VERSION = re.compile(r"^models:/([^/@]+)/(\d+|[Ll][Aa][Tt][Ee][Ss][Tt])$")
_RUNS = re.compile(r"^runs:/([^/]+)/(.+)$")
URI_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/generator"


def resolve_model_uri(uri: str, tracking_uri: str) -> tuple[str | None, str | None, str]:
    """``(name, version, run_id)`` of a model URI. For ``runs:/`` URIs name and version are those of
    a registered version logged from that run's model when there is one, else None. UserError (one
    line, listing what exists) for a malformed URI or a missing model, alias, version or run."""
    name, version, run_id, _ = _resolve(_client(tracking_uri), uri, tracking_uri)
    return name, version, run_id


def _resolve(client, uri: str, tracking_uri: str) -> tuple[str | None, str | None, str, str | None]:
    """``(name, version, run_id, logged_model_id)`` of ``uri``, with one-line UserErrors."""
    if m := _MODELS_ALIAS.match(uri):
        name, alias = m.groups()
        model = _get_registered(client, name)
        if alias.lower() == LATEST:
            return _version_info(_newest(client, name))
        aliases = dict(model.aliases or {})
        if alias not in aliases:
            newest = _version_numbers(client, name)[-1:]
            shown = ", ".join([f"@{a} (v{v})" for a, v in sorted(aliases.items())]
                              + [f"@{LATEST} (v{v})" for v in newest])
            raise UserError(f"model '{name}' has no alias '{alias}'; aliases: {shown}")
        return _version_info(client.get_model_version_by_alias(name, alias))
    if m := _MODELS_VERSION.match(uri):
        name, version = m.groups()
        if version.lower() == LATEST:
            _get_registered(client, name)
            return _version_info(_newest(client, name))
        return _version_info(_check_version(client, name, version))
    if m := _RUNS.match(uri):
        return _resolve_run(client, *m.groups(), tracking_uri=tracking_uri)
    raise UserError(f"cannot read model URI '{uri}'; expected {URI_FORMS}")


def _version_info(mv) -> tuple[str, str, str, str | None]:
    """``(name, version, run_id, logged_model_id)`` of a ModelVersion; the id is read from a
    ``models:/m-...`` source when the version does not carry it."""
    model_id = getattr(mv, "model_id", None)
    if not model_id and str(mv.source).startswith("models:/m-"):
        model_id = str(mv.source)[len("models:/"):]
    return mv.name, str(mv.version), mv.run_id, model_id


def _resolve_run(client, run_id: str, path: str, tracking_uri: str):
    """``(name, version, run_id, logged_model_id)`` of run ``run_id``'s newest logged model named
    ``path`` (e.g. ``generator``); name and version None when no registered version comes from it."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        from pipelines.defaults import redact_uri

        raise UserError(f"no MLflow run '{run_id}' in {redact_uri(tracking_uri)}") from None
    kind = path.strip("/")
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    found = []
    for output in sorted(outputs, key=lambda o: o.step):
        logged = client.get_logged_model(output.model_id)
        if logged.name == kind:
            found.append(logged.model_id)
    if not found:
        names = sorted({client.get_logged_model(o.model_id).name for o in outputs})
        raise UserError(f"run '{run_id}' has no logged model '{kind}'; it has: {', '.join(names) or 'none'}")
    model_id = found[-1]
    for mv in client.search_model_versions(f"run_id='{run_id}'"):
        if _version_info(mv)[3] == model_id:
            return mv.name, str(mv.version), run_id, model_id
    return None, None, run_id, model_id


def _download(uri: str, tracking_uri: str, dst: str) -> str:
    """Resolve ``uri`` (with clear errors) and download its model folder into ``dst``. The logged
    model's artifact location is downloaded directly, with the explicit tracking URI (MLflow's
    ``models:/`` download path would consult the process-wide URI)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    name, version, run_id, model_id = _resolve(client, uri, tracking_uri)
    try:
        if model_id:
            location = client.get_logged_model(model_id).artifact_location
        else:  # a version registered from a plain artifact path (not an igan-made version)
            location = client.get_model_version_download_uri(name, version)
        return mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=dst,
                                                   tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except MlflowException as exc:
        raise UserError(f"cannot download model {uri}: {str(exc).splitlines()[0]}") from None

"""Reading the registry: an MLflow client for a tracking URI, and registered models and versions
looked up with one-line UserErrors that list what exists."""
from __future__ import annotations

from pipelines.errors import UserError


def _client(tracking_uri: str):
    """An MlflowClient for ``tracking_uri`` (also its registry URI); UserError for a store it cannot
    open (:func:`pipelines.tracking.make_client`)."""
    from pipelines.tracking import make_client

    return make_client(tracking_uri)


def _registered_names(client) -> list[str]:
    """The names of every registered model, sorted (all pages of the search)."""
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        names += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(names)


def _get_registered(client, name: str):
    """The RegisteredModel ``name``; UserError listing the registered igan models when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = [n for n in _registered_names(client) if n.startswith("igan-")]
        raise UserError(f"no registered model '{name}'; registered: {', '.join(known) or 'none'}") from None


def _version_numbers(client, name: str) -> list[str]:
    """The version numbers of ``name`` as strings, oldest first."""
    versions = client.search_model_versions(f"name='{name}'")
    return sorted((str(v.version) for v in versions), key=int)


def _check_version(client, name: str, version: str):
    """The ModelVersion ``version`` of ``name``; UserError listing the model's versions when there is none."""
    from mlflow.exceptions import MlflowException

    _get_registered(client, name)
    try:
        return client.get_model_version(name, version)
    except MlflowException:
        raise UserError(f"model '{name}' has no version {version}; versions: "
                        f"{', '.join(_version_numbers(client, name)) or 'none'}") from None


def _newest(client, name: str):
    """The newest ModelVersion of ``name``; UserError when it has no versions."""
    numbers = _version_numbers(client, name)
    if not numbers:
        raise UserError(f"model '{name}' has no versions")
    return client.get_model_version(name, numbers[-1])

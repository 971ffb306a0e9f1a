"""Checking a tracking URI before a command uses it: a local store that exists, a database whose
driver is installed, a server that answers and accepts the credentials."""
from __future__ import annotations

from pipelines.errors import UserError


def check_tracking_uri(tracking_uri: str, timeout: float = 5.0, must_exist: bool = True) -> None:
    """UserError (one line, the URI redacted) when the store behind ``tracking_uri`` cannot be used:
    a server that does not answer or refuses the credentials (HTTP 401/403), a database whose
    driver is not installed, or, with ``must_exist``, a sqlite store whose database file does not
    exist (so read-only commands fail fast, not after MLflow's minutes of retries or with an empty
    new database)."""
    from pipelines.defaults import redact_uri
    from pipelines.tracking import local_store_path, make_client

    db = local_store_path(tracking_uri)
    if db is not None:
        if must_exist and not db.expanduser().exists():
            raise UserError(f"no MLflow store at {redact_uri(tracking_uri)} (nothing trained yet? run `igan train`, "
                            "or pass --tracking-uri)")
        return
    if tracking_uri.startswith(("http://", "https://")):
        _check_reachable(tracking_uri, timeout)
        _check_credentials(tracking_uri, timeout)
    else:
        make_client(tracking_uri)  # a database: UserError when its driver is missing


def _check_reachable(tracking_uri: str, timeout: float) -> None:
    """UserError when nothing answers at the server's ``/health`` (asked without credentials:
    urllib cannot send a URI's ``user:password@``, and any HTTP answer will do)."""
    import urllib.error
    import urllib.request

    from pipelines.defaults import redact_uri, strip_credentials

    url = strip_credentials(tracking_uri).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answers (perhaps behind auth or a proxy without /health)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach the MLflow server at {redact_uri(tracking_uri)}: {reason}") from None


#: An endpoint behind a server's authentication (``/health`` is not), cheap to answer.
_AUTH_PROBE = "/api/2.0/mlflow/experiments/search"


def _check_credentials(tracking_uri: str, timeout: float) -> None:
    """UserError when the server answers an API request with HTTP 401 or 403. The request goes
    through MLflow's own HTTP layer, so it carries what every later request will: the URI's
    ``user:password@`` or ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    from pipelines.defaults import redact_uri
    from pipelines.errors import CREDENTIALS_HINT

    try:
        response = http_request(get_default_host_creds(tracking_uri), _AUTH_PROBE, "GET",
                                params={"max_results": 1}, max_retries=0, timeout=timeout,
                                raise_on_status=False)
    except MlflowException:
        return  # it answered /health: a slow or failed probe is left to the command's own requests and retries
    if response.status_code in (401, 403):
        raise UserError(f"the MLflow server at {redact_uri(tracking_uri)} refused the credentials (HTTP "
                        f"{response.status_code} {response.reason}): {CREDENTIALS_HINT}")

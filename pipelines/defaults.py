"""The one place for defaults shared by every ``igan`` command.

Everything local lives under ``IGAN_HOME`` (``$IGAN_HOME``, else ``~/.igan``)::

    <IGAN_HOME>/mlflow.db        default MLflow tracking store (sqlite)
    <IGAN_HOME>/mlartifacts      default MLflow artifact location
    <IGAN_HOME>/ray_results      default Ray Train storage (checkpoints) for ``igan train --storage``
    <IGAN_HOME>/data/digits      the embedded digits set, sharded on first use

The tracking URI is resolved the same way by every command (``train``, ``tune``, ``sample``, ``score``,
``models``), so ``igan models`` finds what ``igan train`` registered: ``--tracking-uri``, else
``$MLFLOW_TRACKING_URI``, else the sqlite store above.

Tracking URIs may carry credentials (``http://user:password@host``, ``postgresql://u:p@h/db``, a
``?password=`` query); :func:`redact_uri` is the one way such a URI is shown (messages, log lines,
MLflow params and tags, ``--json``), :func:`strip_credentials` the form stored in job records, and
:func:`redact_text` scrubs free text (exception messages) of both and of the credentials MLflow reads
from the environment.

Import stays light (no mlflow, no ray): the CLI imports this module to build its help text.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

ENV_HOME = "IGAN_HOME"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
#: Secrets MLflow reads from the environment (basic auth password, bearer token): never shown.
ENV_SECRETS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
REDACTED = "***"

DEFAULT_EXPERIMENT = "igan"
DEFAULT_PRESET = "digits"
DEFAULT_MAX_FAILURES = 3


def igan_home() -> Path:
    """``$IGAN_HOME`` if set (``~`` expanded), else ``~/.igan``. Not created here."""
    value = os.environ.get(ENV_HOME)
    return Path(value).expanduser() if value else Path.home() / ".igan"


def default_tracking_uri() -> str:
    """``sqlite:///<IGAN_HOME>/mlflow.db`` (absolute path, so four slashes on POSIX)."""
    return f"sqlite:///{(igan_home() / 'mlflow.db').resolve()}"


def default_artifact_location() -> str:
    """``<IGAN_HOME>/mlartifacts`` as a ``file://`` URI (new experiments in the default store put
    their artifacts there)."""
    return (igan_home() / "mlartifacts").resolve().as_uri()


def default_storage() -> str:
    """Default Ray Train storage path for checkpoints: ``<IGAN_HOME>/ray_results``."""
    return str((igan_home() / "ray_results").resolve())


def digits_cache() -> Path:
    """Where the embedded digits set is sharded on first use: ``<IGAN_HOME>/data/digits``."""
    return igan_home() / "data" / "digits"


def turing_db() -> Path:
    """The SQLite database of ``igan turing`` (image sets and answers): ``<IGAN_HOME>/turing.db``."""
    return igan_home() / "turing.db"


def resolve_tracking_uri(arg: str | None = None) -> str:
    """The tracking URI a command uses: ``arg`` (``--tracking-uri``), else ``$MLFLOW_TRACKING_URI``,
    else :func:`default_tracking_uri`. For the default sqlite store the parent folder is created so
    MLflow can open the database."""
    if arg:
        return arg
    env = os.environ.get(ENV_TRACKING_URI)
    if env:
        return env
    ensure_home()
    return default_tracking_uri()


def is_default_store(tracking_uri: str) -> bool:
    """True when ``tracking_uri`` is the local default sqlite store."""
    return tracking_uri == default_tracking_uri()


def ensure_home() -> Path:
    """Create ``IGAN_HOME`` if missing and return it."""
    home = igan_home()
    home.mkdir(parents=True, exist_ok=True)
    return home


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI for ``tracking_uri`` (for a server URI the
    answer is simply to open it in a browser), credentials redacted."""
    shown = redact_uri(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {shown} in a browser"
    cmd = f"mlflow ui --backend-store-uri {shown}"
    if is_default_store(tracking_uri):
        cmd += f" --default-artifact-root {default_artifact_location()}"
    return cmd


# -- credentials in URIs ---------------------------------------------------------------------------
# scheme://userinfo@ : the userinfo runs to the last "@" before the path (a password written with a
# raw "@" is split there by urllib and requests too), never across whitespace.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#]*)@")
# key=value of a secret, at a word start or after a percent-encoded ";" or "&" (an ODBC connection
# string inside a query: odbc_connect=DRIVER%3Dx%3BPWD%3Dsecret)
_SECRET_PARAM = re.compile(r"(?P<key>(?:(?<![A-Za-z0-9_])|(?<=%3[Bb])|(?<=%26))(?:password|passwd|pwd|token|secret|"
                           r"api_key|access_key|sslpassword)(?:=|%3[Dd]))(?P<value>(?:[^&\s#;%'\"]|%(?!3[Bb]|26))+)",
                           re.IGNORECASE)
#: Environment secrets shorter than this are not scrubbed from free text: replacing a one- or
#: two-character string everywhere would garble every message without hiding anything.
_MIN_SCRUBBED = 4


def _mask_userinfo(match: re.Match) -> str:
    user, sep, _ = match["userinfo"].partition(":")
    # "user:password@" keeps the user; a lone "token@" is all secret
    return f"{match['scheme']}{user}:{REDACTED}@" if sep else f"{match['scheme']}{REDACTED}@"


def redact_uri(uri: str) -> str:
    """``uri`` with its password (or a userinfo that is only a token) and secret query values
    (``password=``, ``token=``, ...) replaced by ``***``: ``http://user:***@host:5000``."""
    text = _USERINFO.sub(_mask_userinfo, str(uri))
    return _SECRET_PARAM.sub(lambda m: m["key"] + REDACTED, text)


def strip_credentials(uri: str) -> str:
    """``uri`` without its userinfo and secret query parameters (``http://host:5000``): the form a
    job record stores. The credentials come back from ``--tracking-uri`` or the environment."""
    base, sep, query = _USERINFO.sub(lambda m: m["scheme"], str(uri)).partition("?")
    # a parameter holding a secret anywhere (``odbc_connect=...;PWD=x``) goes as a whole
    kept = [item for item in query.split("&") if item and redact_uri(item) == item]
    return base + (sep + "&".join(kept) if kept else "")


def redact_text(text: str) -> str:
    """Free text (an exception message, a failure reason) with every credential in URIs and the
    values of :data:`ENV_SECRETS` replaced by ``***``."""
    text = redact_uri(str(text))
    for name in ENV_SECRETS:
        secret = os.environ.get(name) or ""
        if len(secret) >= _MIN_SCRUBBED:
            text = text.replace(secret, REDACTED)
    return text


def resume_tracking_uri(given: str | None, stored: str | None) -> str:
    """The tracking URI of a resumed job: ``given`` (``--tracking-uri``); else ``$MLFLOW_TRACKING_URI``
    when it names the store the job record names (it may carry the credentials the record does not
    keep); else the stored URI; else :func:`resolve_tracking_uri`."""
    if given or not stored:
        return resolve_tracking_uri(given)
    env = os.environ.get(ENV_TRACKING_URI)
    if env and strip_credentials(env) == strip_credentials(stored):
        return env
    return stored

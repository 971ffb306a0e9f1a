"""User-facing errors: the CLI prints their message on one line and exits with status 2.

:func:`describe_failure` turns the few library failures a user can cause or meet (the tracking server
refusing the credentials, an MLflow request failing, a file that cannot be written) into the same one
line; anything else is a bug and keeps its traceback. Import stays light: no mlflow, no ray.
"""
from __future__ import annotations

import os
import sys
import tempfile

from pipelines.defaults import redact_text


class UserError(Exception):
    """Bad input from the user (missing folder, wrong format, unknown name). No traceback is shown."""


class ResourceWaitTimeout(Exception):
    """The cluster did not provide what a job asked for within ``--wait-for-resources`` (a valid
    request that could not start): the CLI prints the one-line message and exits with status 1."""


#: MLflow's error codes for HTTP 401 and 403: wrong or missing credentials are bad input.
AUTH_ERROR_CODES = ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED", "PERMISSION_DENIED")
#: How to give a tracking server's credentials (written without "scheme://", which would be redacted).
CREDENTIALS_HINT = ("give the credentials in --tracking-uri as user:password@host, or set MLFLOW_TRACKING_USERNAME "
                    "and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` (stripped), else ``""``."""
    return next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")


def one_line(text: str) -> str:
    """``text`` with its non-empty lines joined by spaces."""
    return " ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())


def report_error(command: str, status: int, message: str) -> int:
    """Print ``igan COMMAND: error: MESSAGE`` as one line on stderr, credentials redacted; returns
    ``status`` (the exit status)."""
    print(f"igan {command}: error: {one_line(redact_text(message))}", file=sys.stderr, flush=True)
    return status


def describe_failure(exc: BaseException) -> tuple[int, str] | None:
    """``(exit status, one-line message)`` for an MLflow failure (2 for refused credentials, else
    1) or an OSError (1, naming the file); None for anything else (a bug: keep the traceback)."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")  # an MlflowException implies mlflow is loaded
    if mlflow_exceptions is not None and isinstance(exc, mlflow_exceptions.MlflowException):
        code = str(getattr(exc, "error_code", ""))
        if code in AUTH_ERROR_CODES:
            return 2, (f"the MLflow tracking server refused the request ({code}: "
                       f"{first_line(exc.message)}): {CREDENTIALS_HINT}")
        return 1, f"MLflow request failed: {first_line(exc.message) or code}"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return 1, f"{exc.strerror or first_line(str(exc)) or type(exc).__name__}{where}"
    return None


def check_writable(location: str, flag: str) -> None:
    """Create the local folder ``location`` if missing; UserError naming ``flag`` when it cannot be
    created or written (read-only file system, no permission, a file in the way). URIs
    (``s3://``...) are not checked here: their store answers when the job writes."""
    if "://" in location:
        return
    if os.path.exists(location) and not os.path.isdir(location):
        raise UserError(f"{flag} {location} exists and is not a folder")
    try:
        os.makedirs(location, exist_ok=True)
        with tempfile.TemporaryFile(dir=location):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {location} is not writable: {exc.strerror or exc}") from None

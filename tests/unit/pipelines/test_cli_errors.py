"""Broken inputs through the ``igan`` CLI: each ends with exit status 2 (bad input) or 1 (a failed
job) and one line on stderr that names the file, key or URI; never a traceback. Fast: every case
fails before Ray starts or any MLflow run is made. The tracking server that refuses credentials is
:mod:`auth_proxy` (its upstream is never reached: every request it sees is refused).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from helpers.auth_proxy import PASSWORD, READER, USER, AuthProxy

from pipelines import cli

pytestmark = pytest.mark.usefixtures("igan_home")
from helpers import REPO  # noqa: E402
WRONG_PASSWORD = "wr0ng-pw-9931"


@pytest.fixture(scope="module")
def refusing_server():
    """A tracking server behind authentication (nothing behind it: refused requests never go on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        unused = s.getsockname()[1]
    proxy = AuthProxy(f"http://127.0.0.1:{unused}")
    yield proxy
    proxy.close()


@pytest.fixture
def storage(tmp_path) -> Path:
    """A storage folder holding damaged job and search records."""
    root = tmp_path / "storage"
    for name, file, text in (("broken", "igan_job.json", '{"name": "broken", "config": {'),
                             ("noconfig", "igan_job.json", '{"name": "noconfig", "run_id": "abc"}'),
                             ("badconfig", "igan_job.json", '{"name": "badconfig", "config": {"data": {"nokey": 1}}}'),
                             ("search", "igan_tune.json", "\x00\xff not json"),
                             ("listed", "igan_tune.json", "[1, 2]")):
        (root / name).mkdir(parents=True)
        (root / name / file).write_text(text, encoding="latin-1")
    return root


@pytest.fixture
def read_only(tmp_path):
    """``(folder, prefix)``: a folder nothing can be written in and the command prefix that makes it
    so for a subprocess. Without root, permissions do; root ignores them, so the command then runs
    in a user and mount namespace where the folder is a read-only bind mount."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder, []
        folder.chmod(0o755)
        return
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("running as root without user namespaces: no way to make a read-only folder")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    yield folder, ["unshare", "-rm", "sh", "-c", script, str(folder)]


def run_in_process(argv: list[str], capfd) -> tuple[int, str, str]:
    """``(status, stdout, stderr)`` of ``igan ARGV`` run by :func:`pipelines.cli.main` in this
    process; an exception escaping it is what the real CLI would print: its traceback, on stderr."""
    capfd.readouterr()
    escaped = ""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    except Exception:  # noqa: BLE001 - the CLI's process would die with this traceback
        code, escaped = 1, traceback.format_exc()
    out, err = capfd.readouterr()
    return code, out, err + escaped


def run_subprocess(argv: list[str], prefix: list[str]) -> tuple[int, str, str]:
    """``(status, stdout, stderr)`` of ``igan ARGV`` in a new Python process, under ``prefix``."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([*prefix, sys.executable, "-m", "pipelines.cli", *argv], env=env, capture_output=True,
                         text=True, timeout=300)
    return res.returncode, res.stdout, res.stderr


def assert_one_line(code: int, out: str, err: str, status: int, needle: str) -> None:
    """Exit ``status``, no traceback, and stderr exactly one line from igan that contains ``needle``."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("igan "), err
    assert needle in lines[0], lines[0]
    assert code == status, (code, err)


def case(name: str, argv: list[str], status: int, needle: str, needs_missing: str | None = None):
    """One row of the table; ``needs_missing``: a module whose absence the case is about."""
    present = needs_missing is not None and importlib.util.find_spec(needs_missing) is not None
    return pytest.param(argv, status, needle, id=name,
                        marks=pytest.mark.skipif(present, reason=f"{needs_missing} is installed"))


# {tmp}, {storage}, {refused} (no credentials), {wrong} (a wrong password), {reader} (a user without
# access) and {closed} (a port nothing listens on) are filled in by the test.
CASES = [
    case("unknown-preset", ["train", "--preset", "nope"], 2, "unknown preset 'nope'"),
    case("bad-set-value", ["train", "--set", "train.epochs=0"], 2, "train.epochs"),
    case("bad-set-key", ["train", "--set", "train.nokey=1"], 2, "train.nokey"),
    case("set-without-value", ["train", "--set", "train.epochs"], 2, "train.epochs"),
    case("needs-data", ["train", "--preset", "mnist"], 2, "--data"),
    case("missing-data", ["train", "--data", "{tmp}/nowhere"], 2, "{tmp}/nowhere"),
    case("unknown-dataset", ["shard", "nope", "--out", "{tmp}/out"], 2, "unknown data set 'nope'"),
    case("corrupt-job-record", ["train", "--resume", "--name", "broken", "--storage", "{storage}"], 2,
         "{storage}/broken/igan_job.json is corrupt"),
    case("corrupt-latest-job-record", ["train", "--resume", "--storage", "{storage}"], 2, "igan_job.json is corrupt"),
    case("job-record-without-config", ["train", "--resume", "--name", "noconfig", "--storage", "{storage}"], 2,
         "key 'config'"),
    case("job-record-bad-config", ["train", "--resume", "--name", "badconfig", "--storage", "{storage}"], 2,
         "data.nokey"),
    case("corrupt-tune-record", ["tune", "digits", "--resume", "--name", "search", "--storage", "{storage}"], 2,
         "{storage}/search/igan_tune.json is corrupt"),
    case("tune-record-not-an-object", ["tune", "digits", "--resume", "--name", "listed", "--storage", "{storage}"],
         2, "{storage}/listed/igan_tune.json is corrupt"),
    case("401-models", ["models", "--tracking-uri", "{refused}"], 2, "HTTP 401"),
    case("401-wrong-password", ["models", "--tracking-uri", "{wrong}"], 2, f"http://{USER}:***@"),
    case("403-models", ["models", "--tracking-uri", "{reader}"], 2, "HTTP 403"),
    case("401-train", ["train", "--preset", "ring8", "--tracking-uri", "{wrong}", "--storage", "{tmp}/runs"], 2,
         "HTTP 401"),
    case("401-tune", ["tune", "ring8", "--tracking-uri", "{refused}", "--storage", "{tmp}/runs"], 2, "HTTP 401"),
    case("401-sample", ["sample", "models:/igan-ring8-generator@latest", "--n", "4", "--out", "{tmp}/g.png",
                        "--tracking-uri", "{refused}"], 2, "HTTP 401"),
    case("403-score", ["score", "models:/igan-ring8-generator@latest", "--tracking-uri", "{reader}"], 2, "HTTP 403"),
    case("server-down", ["models", "--tracking-uri", "http://127.0.0.1:{closed}"], 2, "cannot reach the MLflow server"),
    case("no-postgres-driver-models", ["models", "--tracking-uri", "postgresql://u@127.0.0.1/db"], 2, "psycopg",
         needs_missing="psycopg"),
    case("no-postgres-driver-tune", ["tune", "ring8", "--tracking-uri", "postgresql://u@127.0.0.1/db",
                                     "--storage", "{tmp}/runs"], 2, "psycopg", needs_missing="psycopg"),
    case("no-mysql-driver-train", ["train", "--preset", "ring8", "--tracking-uri",
                                   f"mysql://u:{WRONG_PASSWORD}@127.0.0.1/db", "--storage", "{tmp}/runs"], 2,
         "MySQLdb", needs_missing="MySQLdb"),
]


@pytest.mark.parametrize("argv, status, needle", CASES)
def test_broken_input_is_one_line(argv, status, needle, tmp_path, storage, refusing_server, capfd, monkeypatch):
    # igan sets MLflow's switch when a URI carries credentials; restored after the test
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once the socket is closed
    fill = {"tmp": str(tmp_path), "storage": str(storage), "refused": refusing_server.url,
            "wrong": refusing_server.with_credentials(USER, WRONG_PASSWORD),
            "reader": refusing_server.with_credentials(READER, PASSWORD), "closed": str(closed)}
    code, out, err = run_in_process([a.format(**fill) for a in argv], capfd)
    assert_one_line(code, out, err, status, needle.format(**fill))
    assert WRONG_PASSWORD not in out + err and PASSWORD not in out + err  # shown redacted, if at all


READ_ONLY = [
    ("shard-out", ["shard", "digits", "--out", "{ro}/shards"], "--out {ro}/shards is not writable"),
    ("train-storage", ["train", "--preset", "ring8", "--storage", "{ro}/runs"], "--storage {ro}/runs is not writable"),
    ("tune-storage", ["tune", "ring8", "--storage", "{ro}"], "--storage {ro} is not writable"),
]


@pytest.mark.parametrize("case, argv, needle", READ_ONLY, ids=[c[0] for c in READ_ONLY])
def test_read_only_output_is_one_line(case, argv, needle, read_only):
    folder, prefix = read_only
    code, out, err = run_subprocess([a.format(ro=folder) for a in argv], prefix)
    assert_one_line(code, out, err, 2, needle.format(ro=folder))


# -- library failures the CLI turns into one line ----------------------------------------------------
def test_mlflow_failures_mid_command_are_one_line(monkeypatch, capfd):
    """An MLflow request that fails once the job runs (the server went away, the credentials were
    revoked): one line, status 1 for a failed request and 2 for refused credentials, URI redacted."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, UNAUTHENTICATED

    from pipelines import cmd_models

    for error_code, status, needle in ((INTERNAL_ERROR, 1, "MLflow request failed"),
                                       (UNAUTHENTICATED, 2, "refused the request (UNAUTHENTICATED")):
        def fail(args, code=error_code):
            raise MlflowException(f"API request to http://{USER}:{PASSWORD}@127.0.0.1:1/api/2.0/mlflow/runs/get "
                                  "failed\nwith a second line", error_code=code)

        monkeypatch.setattr(cmd_models, "run", fail)
        code, out, err = run_in_process(["models"], capfd)
        assert_one_line(code, out, err, status, needle)
        assert PASSWORD not in err and f"http://{USER}:***@127.0.0.1:1" in err


def test_os_errors_are_one_line_naming_the_file(monkeypatch, capfd):
    from pipelines import cmd_models

    def fail(args):
        raise OSError(28, "No space left on device", "/data/shards/train-000001.tar")

    monkeypatch.setattr(cmd_models, "run", fail)
    code, out, err = run_in_process(["models"], capfd)
    assert_one_line(code, out, err, 1, "No space left on device: /data/shards/train-000001.tar")


def test_bugs_keep_their_traceback(monkeypatch):
    from pipelines import cmd_models

    monkeypatch.setattr(cmd_models, "run", lambda args: {}["missing"])
    with pytest.raises(KeyError):
        cli.main(["models"])

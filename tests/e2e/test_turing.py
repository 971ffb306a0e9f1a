"""``igan turing`` end to end: one-line errors of the CLI against a real MLflow server, and in headless Chromium a registered digits generator, the real CLI serving
the page, two annotators answering by click and by key, the server killed and started again
mid-way, then ``--summary`` against the answers given and what it logged to MLflow. Skips where
Playwright or a Chromium (Debian's ``chromium``) is not installed. Saves a screenshot of the page
to ``tests/artifacts/turing.png`` (ignored by git) and prints its path."""
from __future__ import annotations

import csv
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from igan.config import apply_overrides
from igan.presets import get_preset
from igan.trainer import Trainer
from pipelines import cli, registry
from pipelines.tracking import RunTracker, make_client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
from helpers import REPO  # noqa: E402
from helpers.browser import headless_chromium, needs_browser  # noqa: E402
ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Playwright (Debian's browser; Playwright's own builds are not
    downloaded)."""
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def generator_uri(mlflow_server):
    """``(models:/igan-digits-generator/V, run_id)`` of a small untrained digits generator."""
    cfg = apply_overrides(get_preset("digits"), ["model.d_widths=[16,8]", "model.g_widths=[16]"])
    trainer = Trainer(cfg, device="cpu")
    with RunTracker(mlflow_server, "igan-test-turing", run_name="turing") as tracker:
        tracker.log_config(cfg)
        uri = registry.register_models(tracker.run_id, {"generator": trainer.G}, cfg, mlflow_server)["generator"]
    return uri, tracker.run_id


class Server:
    """``igan turing ... --json`` in a subprocess; ``start()`` waits for its JSON line."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.argv, self.env, self.proc, self.info = argv, env, None, None

    def start(self) -> dict:
        self.proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "turing", *self.argv],
                                     env=self.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        seen = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if line.startswith("{"):
                self.info = json.loads(line)
                return self.info
        self.stop()
        pytest.fail("igan turing did not start:\n" + "".join(seen)[-3000:])

    def stop(self) -> None:
        """SIGTERM, as when a terminal is closed: answers must already be on disk."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Annotator:
    """One person at one browser page; ``given`` collects ``(name, image_id, answer)``."""

    def __init__(self, page, name: str, given: list):
        self.page, self.name, self.given = page, name, given

    def start(self, url: str, expect_name: str = "") -> int:
        """Open the page, sign in, return how many answers the page says they have given."""
        self.page.goto(url)
        assert self.page.input_value("#name") == expect_name  # remembered by the browser
        self.page.fill("#name", self.name)
        self.page.click("#start")
        self.page.wait_for_selector("#image[data-image-id]")
        return int(self.page.get_attribute("#progress", "data-answered"))

    def answer(self, choice: str, by: str) -> None:
        before = int(self.page.get_attribute("#progress", "data-answered"))
        image_id = int(self.page.get_attribute("#image", "data-image-id"))
        if by == "click":
            self.page.click(f"#{choice}")
        else:
            self.page.keyboard.press(choice[0])
        self.page.wait_for_function(
            f"document.getElementById('progress').dataset.answered === '{before + 1}'")
        self.given.append((self.name, image_id, choice))


@needs_browser
def test_two_annotators_restart_and_summary(browser, generator_uri, mlflow_server, digits_data, tmp_path,
                                            monkeypatch, capsys):
    uri, run_id = generator_uri
    home = tmp_path / "home"
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env = {**os.environ, "IGAN_HOME": str(home), "PYTHONPATH": os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")]), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    port = _free_port()
    server = Server([uri, "--data", digits_data, "--n", "4", "--port", str(port), "--device", "cpu",
                     "--tracking-uri", mlflow_server, "--json"], env)
    given: list[tuple[str, int, str]] = []
    try:
        info = server.start()
        url = info["url"]
        assert url == f"http://127.0.0.1:{port}/" and info["images"] == 8 and info["split"] == "test"
        with urllib.request.urlopen(url + "images/0.png") as response:
            first_image = response.read()

        alice_ctx, bob_ctx = browser.new_context(), browser.new_context()
        alice = Annotator(alice_ctx.new_page(), "alice", given)
        bob = Annotator(bob_ctx.new_page(), "bob", given)
        assert alice.start(url) == 0 and bob.start(url) == 0
        alice.answer("real", "click")
        alice.answer("generated", "key")
        alice.answer("generated", "click")
        bob.answer("real", "key")
        bob.answer("real", "key")
        bob.page.close()  # bob closes his tab

        server.stop()  # the server goes away mid-test
        with pytest.raises(Exception):
            urllib.request.urlopen(url + "healthz", timeout=2)
        again = server.start()
        assert again["set_id"] == info["set_id"]
        with urllib.request.urlopen(url + "images/0.png") as response:
            assert response.read() == first_image  # the same images after a restart

        alice.page.reload()
        assert alice.start(url, expect_name="alice") == 3
        alice.answer("real", "key")
        bob = Annotator(bob_ctx.new_page(), "bob", given)
        assert bob.start(url, expect_name="bob") == 2
        bob.answer("generated", "click")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "turing.png"
        bob.page.set_viewport_size({"width": 560, "height": 520})
        bob.page.screenshot(path=str(shot))
        with capsys.disabled():
            print(f"\nscreenshot of the Turing test page: {shot}")
        # bob in a second tab answers the image his first tab shows: the first tab's answer is
        # refused (409, nothing saved) and it moves on to his next image
        tab2 = Annotator(bob_ctx.new_page(), "bob", given)
        assert tab2.start(url, expect_name="bob") == 3
        shown = int(bob.page.get_attribute("#image", "data-image-id"))
        assert int(tab2.page.get_attribute("#image", "data-image-id")) == shown
        tab2.answer("generated", "key")
        bob.page.click("#real")
        bob.page.wait_for_function("document.getElementById('error').textContent.includes('already answered')")
        assert bob.page.get_attribute("#progress", "data-answered") == "4"
        assert int(bob.page.get_attribute("#image", "data-image-id")) == shown + 1
        for choice, by in [("generated", "key"), ("real", "click"), ("real", "key"), ("generated", "click")]:
            alice.answer(choice, by)
        assert alice.page.is_visible("#done") and "8 of 8" in alice.page.inner_text("#done")
        alice_ctx.close()
        bob_ctx.close()
    finally:
        server.stop()

    with sqlite3.connect(home / "turing.db") as db:
        truth = dict(db.execute("SELECT image_id, truth FROM images WHERE set_id = ?", (info["set_id"],)))
    assert sorted(truth.values()) == ["generated"] * 4 + ["real"] * 4

    monkeypatch.setenv("IGAN_HOME", str(home))
    capsys.readouterr()
    code = cli.main(["turing", uri, "--summary", "--json", "--tracking-uri", mlflow_server])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])

    def expect(rows):
        right = sum(truth[i] == a for _, i, a in rows)
        return len(rows), right

    for name in ("alice", "bob"):
        mine = [g for g in given if g[0] == name]
        got = result["annotators"][name]
        assert (got["answers"], got["correct"]) == expect(mine)
        for kind in ("real", "generated"):
            assert (got[kind]["answers"], got[kind]["correct"]) == expect([g for g in mine if truth[g[1]] == kind])
    answers, right = expect(given)
    assert (result["pooled"]["answers"], result["pooled"]["correct"]) == (answers, right) == (len(given), right)
    assert result["pooled"]["accuracy"] == pytest.approx(right / answers)
    assert result["run_id"] == run_id

    client = make_client(mlflow_server)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["human_turing_accuracy"] == pytest.approx(right / answers)
    assert metrics["human_turing_answers"] == answers
    local = client.download_artifacts(run_id, "turing/answers.csv", str(tmp_path))
    with open(local) as f:
        logged = [(r["annotator"], int(r["image_id"]), r["answer"]) for r in csv.DictReader(f)]
    assert sorted(logged) == sorted(given)


@pytest.mark.parametrize("extra, words", [
    (["--summary"], ["no Turing test", "--data ROOT"]),
    (["--data", "{data}", "--split", "nope"], ["nope", "test, train"]),
    (["--data", "{data}", "--n", "5000"], ["fewer than --n 5000"]),
    (["--data", "{missing}"], ["no usable shards", "nothing"]),
    (["--data", "{data}", "--port", "{busy}"], ["cannot serve"]),
])
def test_bad_input_exits_2_with_one_line(generator_uri, mlflow_server, digits_data, igan_home, tmp_path,
                                         capsys, extra, words):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        argv = [a.format(data=digits_data, missing=str(tmp_path / "nothing"), busy=busy.getsockname()[1])
                for a in extra]
        capsys.readouterr()
        code = cli.main(["turing", generator_uri[0], "--tracking-uri", mlflow_server, "--device", "cpu", *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err

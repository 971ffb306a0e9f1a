"""``igan turing`` without a browser or MLflow: the SQLite store (atomic saves, fixed sets), the Flask
API's 4xx answers, the Wilson interval and the summary, the seeded image set, CLI argument errors."""
from __future__ import annotations

import csv
import io
import math
import sqlite3

import pytest
import torch

from pipelines import cli
from pipelines.turing import images, summary
from pipelines.turing.app import create_app, display_scale
from pipelines.turing.store import ImageItem, StoreError, TuringStore, set_key

META = {"model_uri": "models:/igan-digits-generator/1", "model_name": "igan-digits-generator",
        "model_version": "1", "run_id": "r1", "data": "/data", "split": "test", "n": 2, "seed": 0,
        "width": 8, "height": 8}


def _items(truths=("real", "generated", "generated", "real")) -> list[ImageItem]:
    return [ImageItem(t, f"{t}-{i}", images.to_png(torch.full((1, 8, 8), i * 40, dtype=torch.uint8)))
            for i, t in enumerate(truths)]


@pytest.fixture
def store(tmp_path):
    return TuringStore(tmp_path / "turing.db")


@pytest.fixture
def set_id(store):
    return store.create_set("k", META, _items())


def test_answers_persist_for_a_new_store_and_a_returning_annotator_continues(store, set_id, tmp_path):
    assert store.progress(set_id, "ann") == {"answered": 0, "total": 4, "next": 0}
    assert store.record_answer(set_id, "ann", 0, "real") is True
    assert store.record_answer(set_id, " ann ", 1, "real") is False  # the name is stripped
    reopened = TuringStore(tmp_path / "turing.db")  # what a restarted server sees
    assert reopened.progress(set_id, "ann") == {"answered": 2, "total": 4, "next": 2}
    assert reopened.progress(set_id, "bob") == {"answered": 0, "total": 4, "next": 0}
    rows = reopened.answers([set_id])
    assert [(r["annotator"], r["image_id"], r["answer"], r["truth"], r["correct"]) for r in rows] == [
        ("ann", 0, "real", "real", True), ("ann", 1, "real", "generated", False)]


@pytest.mark.parametrize("annotator, image_id, answer, status", [
    ("ann", 0, "real", 409),          # repeated
    ("ann", 99, "real", 404),         # unknown image
    ("ann", "1", "real", 400),        # id not an integer
    ("ann", True, "real", 400),
    ("ann", 1, "fake", 400),          # answer not real/generated
    ("", 1, "real", 400),
    ("x" * 65, 1, "real", 400),
    (None, 1, "real", 400),
])
def test_refused_answers_change_nothing(store, set_id, annotator, image_id, answer, status):
    store.record_answer(set_id, "ann", 0, "real")
    with pytest.raises(StoreError) as info:
        store.record_answer(set_id, annotator, image_id, answer)
    assert info.value.status == status
    assert len(store.answers([set_id])) == 1


def test_a_set_is_written_whole_or_not_at_all(store):
    bad = _items() + [ImageItem("maybe", "x", b"png")]  # the CHECK constraint fails on the last row
    with pytest.raises(sqlite3.IntegrityError):
        store.create_set("bad", META, bad)
    assert store.find_set("bad") is None
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0


def test_a_set_is_fixed_once_stored(store, set_id):
    again = store.create_set("k", META, _items(("generated",) * 4))
    assert again == set_id and store.set_info(set_id)["total"] == 4
    assert [store.image_png(set_id, i) for i in range(4)] == [i.png for i in _items()]
    assert set_key("r", "m", "1", "/d", "test", 2, 0) != set_key("r", "m", "1", "/d", "test", 2, 1)


def test_sets_for_model_filters(store, set_id):
    other = store.create_set("k2", {**META, "seed": 5}, _items())
    assert store.sets_for_model("r1", "igan-digits-generator", "1") == [set_id, other]
    assert store.sets_for_model("r1", "igan-digits-generator", "1", seed=5) == [other]
    assert store.sets_for_model("r1", "igan-digits-generator", "2") == []


def test_api_answers_and_4xx(store, set_id):
    client = create_app(store, set_id, feedback=True).test_client()
    assert "image-rendering: pixelated" in client.get("/").get_data(as_text=True)
    assert client.get("/api/test").get_json() == {"total": 4, "width": 8, "height": 8, "scale": 32,
                                                  "feedback": True}
    png = client.get("/images/0.png")
    assert png.status_code == 200 and png.mimetype == "image/png" and png.data.startswith(b"\x89PNG")
    ok = client.post("/api/answers", json={"annotator": "ann", "image_id": 0, "answer": "generated"})
    assert ok.status_code == 201 and ok.get_json() == {"answered": 1, "total": 4, "next": 1, "correct": False}
    bad = [
        (client.post("/api/answers", json={"annotator": "ann", "image_id": 0, "answer": "real"}), 409),
        (client.post("/api/answers", json={"annotator": "ann", "image_id": 7, "answer": "real"}), 404),
        (client.post("/api/answers", data="{not json", content_type="application/json"), 400),
        (client.post("/api/answers", json=[1, 2]), 400),
        (client.post("/api/answers", json={"annotator": "ann", "image_id": 1, "answer": "real", "x": 1}), 400),
        (client.post("/api/answers", json={"annotator": "ann", "image_id": 1}), 400),
        (client.get("/images/9.png"), 404),
        (client.get("/api/next"), 400),
    ]
    for response, status in bad:
        assert response.status_code == status and response.get_json()["error"]
    assert [r["answer"] for r in store.answers([set_id])] == ["generated"]
    assert client.get("/api/next?annotator=ann").get_json() == {"answered": 1, "total": 4, "next": 1}


def test_feedback_is_off_by_default(store, set_id):
    client = create_app(store, set_id).test_client()
    reply = client.post("/api/answers", json={"annotator": "a", "image_id": 0, "answer": "real"}).get_json()
    assert "correct" not in reply


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (3, 10), (52, 100), (787, 1000), (1, 1)])
def test_wilson_interval_against_the_formula(k, n):
    z = 1.96
    p = k / n
    low = (2 * n * p + z * z - z * math.sqrt(z * z + 4 * n * p * (1 - p))) / (2 * (n + z * z))
    high = (2 * n * p + z * z + z * math.sqrt(z * z + 4 * n * p * (1 - p))) / (2 * (n + z * z))
    assert summary.wilson_interval(k, n, z=z) == pytest.approx((low, high), rel=1e-12, abs=1e-12)
    assert summary.wilson_interval(k, n) == pytest.approx((low, high), abs=1e-4)  # z = 1.95996...
    assert summary.wilson_interval(0, 0) == (0.0, 1.0)


def test_summary_counts_and_csv(store, set_id):
    for annotator, image_id, answer in [("a", 0, "real"), ("a", 1, "generated"), ("a", 2, "real"),
                                        ("b", 0, "generated")]:
        store.record_answer(set_id, annotator, image_id, answer)
    rows = store.answers([set_id])
    result = summary.summarize(rows)
    a, b, pooled = result["annotators"]["a"], result["annotators"]["b"], result["pooled"]
    assert (a["answers"], a["correct"], a["accuracy"]) == (3, 2, pytest.approx(2 / 3))
    assert (a["real"]["answers"], a["real"]["correct"], a["generated"]["answers"], a["generated"]["correct"]) == \
        (1, 1, 2, 1)
    assert (b["answers"], b["correct"]) == (1, 0)
    assert (pooled["answers"], pooled["correct"], pooled["accuracy"]) == (4, 2, 0.5)
    assert pooled["ci95"] == pytest.approx(list(summary.wilson_interval(2, 4)))
    metrics = summary.metrics_of(result)
    assert metrics["human_turing_accuracy"] == 0.5 and metrics["human_turing_answers"] == 4.0
    assert metrics["human_turing_real_accuracy"] == 0.5  # real image 0: a right, b wrong
    parsed = list(csv.DictReader(io.StringIO(summary.answers_csv(rows))))
    assert [(r["annotator"], r["image_id"], r["answer"], r["correct"]) for r in parsed] == [
        ("a", "0", "real", "True"), ("a", "1", "generated", "True"), ("a", "2", "real", "False"),
        ("b", "0", "generated", "False")]
    assert len(summary.format_table(result)) == 4


def test_interleave_is_seeded_and_keeps_the_size():
    real = torch.randint(0, 256, (3, 3, 4, 5), dtype=torch.uint8)
    fake = torch.randint(0, 256, (3, 3, 4, 5), dtype=torch.uint8)
    first = images.interleave(real, ["a", "b", "c"], fake, seed=1)
    assert first == images.interleave(real, ["a", "b", "c"], fake, seed=1)
    assert sorted(i.truth for i in first) == ["generated"] * 3 + ["real"] * 3
    from PIL import Image

    with Image.open(io.BytesIO(first[0].png)) as image:
        assert image.size == (5, 4) and image.mode == "RGB"
    with pytest.raises(ValueError, match="generator makes"):
        images.interleave(real, ["a", "b", "c"], fake[:, :1], seed=1)
    assert display_scale(8) == 32 and display_scale(32) == 8 and display_scale(500) == 1


@pytest.mark.parametrize("argv, words", [
    (["--host", "0.0.0.0"], ["--allow-remote"]),
    (["--n", "0"], ["--n"]),
    (["--seed", "-1"], ["--seed"]),
    (["--port", "70000"], ["--port"]),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, words):
    code = cli.main(["turing", "models:/igan-digits-generator@latest", *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert all(w in err for w in words)


def test_only_loopback_serves_without_allow_remote():
    from pipelines.cmd_turing import check_host
    from pipelines.errors import UserError

    assert check_host("127.0.0.1", False) is None and check_host("localhost", True) is None
    with pytest.raises(UserError, match="--allow-remote"):
        check_host("0.0.0.0", False)
    assert "warning" in check_host("0.0.0.0", True)

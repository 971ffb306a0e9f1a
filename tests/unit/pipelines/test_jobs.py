"""Job records (pipelines.jobs): one format for training jobs and searches, written atomically,
read with one-line errors naming the file and the key."""
from __future__ import annotations

import pytest

from pipelines.errors import UserError
from pipelines.jobs import (SEARCH_JOB, TRAIN_JOB, find_record, job_exists, latest_record, new_job_name,
                            read_record, resolve_storage, write_record)


def test_write_read_and_latest(tmp_path):
    storage = str(tmp_path)
    write_record(storage, "a", {"name": "a", "config": {}, "created": 1.0}, TRAIN_JOB)
    write_record(storage, "b", {"name": "b", "config": {}, "created": 2.0}, TRAIN_JOB)
    (tmp_path / "not-a-job").mkdir()
    assert read_record(storage, "a", TRAIN_JOB)["name"] == "a" and read_record(storage, "zz", TRAIN_JOB) is None
    assert latest_record(storage, TRAIN_JOB)["name"] == "b" and latest_record(storage, SEARCH_JOB) is None
    assert find_record(storage, None, TRAIN_JOB)["name"] == "b" and job_exists(storage, "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["igan_job.json"]  # no temporary left


@pytest.mark.parametrize("content, words", [
    (b"{not json", "is corrupt (not JSON"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b'{"name": "s", "options": {}, "config": {}}', "key 'parent_run_id' is missing"),
])
def test_corrupt_records_name_the_file_and_the_key(tmp_path, content, words):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "igan_tune.json").write_bytes(content)
    with pytest.raises(UserError) as err:
        read_record(str(tmp_path), "s", SEARCH_JOB)
    assert words in str(err.value) and "igan_tune.json" in str(err.value) and "\n" not in str(err.value)


def test_resume_without_a_record_says_where_it_looked(tmp_path):
    with pytest.raises(UserError, match=r"found no search 'x' in .*--storage"):
        find_record(str(tmp_path), "x", SEARCH_JOB)
    with pytest.raises(UserError, match="found no job in"):
        find_record(str(tmp_path), None, TRAIN_JOB)


def test_storage_and_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_storage("runs") == str(tmp_path / "runs")
    assert resolve_storage("s3://bucket/runs/") == "s3://bucket/runs"
    with pytest.raises(UserError, match="local or shared file system"):
        resolve_storage("s3://bucket/runs", uri_ok=False)
    name = new_job_name("digits")
    assert name.startswith("digits-") and len(name.split("-")) == 4

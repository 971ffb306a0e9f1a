"""Reading runs for ``igan report`` without MLflow: the names MLflow gives step-indexed images
(MLflow 3's ``+`` spelling and MLflow 2's ``%``), old-style epoch grids, which file of a step is
shown, metric histories with repeated steps, and spreading a long run's grids."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import UserError
from pipelines.report import collect
from pipelines.report.collect import ImageName, parse_epoch_sample, parse_image_name

UUID = "987503c4-a96e-4103-ace6-e6e907107b54"


@pytest.mark.parametrize("path, expected", [
    # MLflow 3.x: key, step, timestamp and uuid joined by "+", "/" in the key written as "~"
    (f"images/samples+step+3+timestamp+1796295964242+{UUID}.png",
     ImageName("samples", 3, 1796295964242, UUID, False, "png")),
    (f"images/samples+step+3+timestamp+1796295964242+{UUID}+compressed.webp",
     ImageName("samples", 3, 1796295964242, UUID, True, "webp")),
    (f"images/eval~grid b+step+0+timestamp+17+{UUID}.png", ImageName("eval/grid b", 0, 17, UUID, False, "png")),
    # MLflow 2.x: the same fields joined by "%", "/" written as "#"
    (f"images/samples%step%12%timestamp%1700000000000%{UUID}.png",
     ImageName("samples", 12, 1700000000000, UUID, False, "png")),
    (f"images/a#b%step%1%timestamp%5%{UUID}%compressed.webp", ImageName("a/b", 1, 5, UUID, True, "webp")),
    # a key that itself contains "step"
    (f"mystep+step+7+timestamp+1+{UUID}.png", ImageName("mystep", 7, 1, UUID, False, "png")),
])
def test_step_indexed_image_names_are_parsed(path, expected):
    assert parse_image_name(path) == expected


@pytest.mark.parametrize("path", [
    "images/samples.png", "samples/epoch_0001.png", f"images/samples+step+x+timestamp+1+{UUID}.png",
    f"images/samples+step+1+timestamp+1+{UUID}.txt", f"images/samples+step+1%timestamp%1%{UUID}.png",
    f"images/samples+step+1+timestamp+1+{UUID}.png.json",
])
def test_other_names_are_not_step_indexed_images(path):
    assert parse_image_name(path) is None


def test_old_style_epoch_grids_are_parsed():
    assert parse_epoch_sample("samples/epoch_0001.png") == 1
    assert parse_epoch_sample("samples/epoch_0150.png") == 150
    assert parse_epoch_sample("samples/epoch_12.webp") == 12
    assert parse_epoch_sample("samples/final.png") is None
    assert parse_epoch_sample("samples/epoch_0001.png.bak") is None


@dataclass
class Metric:
    step: int
    value: float
    timestamp: int


def test_history_has_one_point_per_step_the_latest_logged():
    points = collect.history_points([Metric(2, 0.5, 10), Metric(1, 0.9, 5), Metric(2, 0.4, 30),
                                     Metric(3, float("nan"), 40), Metric(2, 0.45, 20)])
    assert points[:2] == [(1, 0.9), (2, 0.4)]
    assert points[2][0] == 3 and points[2][1] != points[2][1]  # NaN kept: the chart drops it


def test_infinities_stored_as_the_largest_float_are_infinite_again():
    import math
    import sys

    points = collect.history_points([Metric(1, sys.float_info.max, 1), Metric(2, -sys.float_info.max, 2),
                                     Metric(3, 1e300, 3)])
    assert points == [(1, math.inf), (2, -math.inf), (3, 1e300)]


@pytest.mark.parametrize("n, total, expected", [
    (12, 5, [0, 1, 2, 3, 4]), (3, 10, [0, 4, 9]), (1, 10, [9]), (0, 10, []), (4, 100, [0, 33, 66, 99]),
])
def test_spread_keeps_first_and_last(n, total, expected):
    assert collect.spread(list(range(total)), n) == expected


@dataclass
class FileInfo:
    path: str
    is_dir: bool = False
    file_size: int = 100


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 4, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeClient:
    """The two MlflowClient calls image collection makes, over a dict ``{artifact path: bytes}``."""

    def __init__(self, files: dict[str, bytes], sizes: dict[str, int] | None = None):
        self.files, self.sizes = files, sizes or {}

    def list_artifacts(self, run_id, path=None):
        prefix = f"{path}/" if path else ""
        return [FileInfo(p, False, self.sizes.get(p, len(b))) for p, b in self.files.items()
                if p.startswith(prefix) and "/" not in p[len(prefix):]]

    def download_artifacts(self, run_id, path, dst_path):
        local = Path(dst_path) / path
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(self.files[path])
        return str(local)


def _step_image(key: str, step: int, stamp: int, uuid: str, compressed: bool = False) -> str:
    return f"images/{key}+step+{step}+timestamp+{stamp}+{uuid}{'+compressed.webp' if compressed else '.png'}"


U1, U2, U3 = (f"{i}{UUID[1:]}" for i in range(1, 4))


def test_sample_files_merge_both_layouts_step_indexed_first():
    client = FakeClient({
        "samples/epoch_0001.png": _png(1), "samples/epoch_0002.png": _png(2), "samples/notes.txt": b"x",
        _step_image("samples", 2, 100, U1): _png(3), _step_image("samples", 2, 100, U1, True): b"webp",
        _step_image("samples", 3, 100, U2): _png(4),
        _step_image("samples", 3, 200, U3): _png(5),  # step 3 again, later: this one is shown
        _step_image("other~key", 1, 100, UUID): _png(6),
    })
    files = collect.sample_files(client, "run")
    assert files == {("other/key", 1): _step_image("other~key", 1, 100, UUID),
                     ("samples", 1): "samples/epoch_0001.png",
                     ("samples", 2): _step_image("samples", 2, 100, U1),
                     ("samples", 3): _step_image("samples", 3, 200, U3)}


def test_a_large_image_is_shown_from_its_smaller_preview():
    big, preview = _step_image("samples", 1, 1, U1), _step_image("samples", 1, 1, U1, True)
    small = _step_image("samples", 2, 1, U2)
    client = FakeClient({big: b"", preview: b"", small: b"", _step_image("samples", 2, 1, U2, True): b""},
                        sizes={big: 2_000_000, preview: 90_000, small: 5_000,
                               _step_image("samples", 2, 1, U2, True): 9_000})
    assert collect.sample_files(client, "run") == {("samples", 1): preview, ("samples", 2): small}


def test_collect_images_reads_spreads_and_notes_unreadable_files():
    files = {f"samples/epoch_{e:04d}.png": _png(e) for e in range(1, 21)}
    files["samples/epoch_0021.png"] = b"not a png"
    images, counts, notes = collect.collect_images(FakeClient(files), "run", max_images=4)
    assert counts == {"samples": 21}
    assert [img.step for img in images] == [1, 8, 14]  # epoch 21 was picked but is unreadable
    assert all(img.mime == "image/png" and (img.width, img.height) == (4, 6) for img in images)
    assert images[0].data == _png(1)
    assert len(notes) == 1 and "samples/epoch_0021.png" in notes[0]


def test_resolve_target_rejects_what_is_not_a_run_id():
    with pytest.raises(UserError, match="cannot read 'not a run'"):
        collect.resolve_target(FakeClient({}), "not a run", "http://x")

"""From run and model URIs to a report file: resolve each to a run, read the runs, render the page
and write it in one step (a half-written page never replaces a good one)."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from pipelines.errors import UserError
from pipelines.report.collect import DEFAULT_MAX_IMAGES, Target, collect_run, resolve_target
from pipelines.report.page import Report, render


def resolve_targets(client, uris: list[str], tracking_uri: str) -> list[Target]:
    """The :class:`Target` of each URI in order; a run named twice (by two URIs) is kept once, at
    its first place. UserError for the first URI that does not name a run."""
    targets, seen = [], set()
    for uri in uris:
        target = resolve_target(client, uri, tracking_uri)
        if target.run_id not in seen:
            seen.add(target.run_id)
            targets.append(target)
    return targets


def build_report(client, targets: list[Target], tracking_uri: str, title: str | None = None,
                 max_images: int = DEFAULT_MAX_IMAGES) -> Report:
    """The :class:`Report` of ``targets``' runs read through ``client``; ``title`` defaults to the
    run names; the tracking URI is shown redacted."""
    from pipelines.defaults import redact_uri

    runs = [collect_run(client, target, max_images) for target in targets]
    if title is None:
        title = "igan report: " + ", ".join(run.name for run in runs[:4]) + (" ..." if len(runs) > 4 else "")
    return Report(title=title, tracking_uri=redact_uri(tracking_uri), created_ms=int(time.time() * 1000), runs=runs)


def check_out_path(out: str | os.PathLike) -> Path:
    """``out`` as an absolute path whose folder exists (created if missing) and takes new files;
    UserError naming ``--out`` otherwise (a folder in the way, no permission, read-only)."""
    path = Path(out).expanduser().absolute()
    if path.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {Path(out) / 'report.html'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise UserError(f"--out {out} cannot be written: {exc.strerror or exc}") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"--out {out} cannot be written: permission denied")
    return path


def write_page(html: str, out: Path) -> int:
    """Write ``html`` to ``out`` through a temporary file in the same folder (replaced at once);
    returns the file's size in bytes."""
    data = html.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def write_report(run_ids: list[str], tracking_uri: str, out: str | os.PathLike, title: str | None = None,
                 max_images: int = DEFAULT_MAX_IMAGES, client=None) -> tuple[Path, int]:
    """Write the report of ``run_ids`` (in that order) to ``out``; returns ``(path, size in bytes)``.
    For callers in Python such as ``igan tune``'s search report."""
    from pipelines.tracking import make_client

    client = client or make_client(tracking_uri)
    path = check_out_path(out)
    report = build_report(client, resolve_targets(client, run_ids, tracking_uri), tracking_uri, title, max_images)
    return path, write_page(render(report), path)

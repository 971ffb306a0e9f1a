"""Running the real ``igan`` CLI in the test process, as the end-to-end tests do."""
from __future__ import annotations

from pipelines import cli


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``igan ARGV`` in-process: ``(exit status, stdout, stderr)`` of that command alone."""
    capsys.readouterr()
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err

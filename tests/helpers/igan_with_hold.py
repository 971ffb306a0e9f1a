"""``python tests/helpers/igan_with_hold.py EPOCH GATE igan-args...``: run ``igan`` (``pipelines.cli.main``)
with a :class:`faults.HoldAt` hook, so a test can act while a job launched as its own process waits
at the start of (1-based) EPOCH until the file GATE exists."""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))]  # tests/, the repository

from helpers.faults import HoldAt  # noqa: E402

from pipelines.cli import main  # noqa: E402

if __name__ == "__main__":
    epoch, gate, *argv = sys.argv[1:]
    sys.exit(main(argv, hooks=[HoldAt(int(epoch), gate)]))

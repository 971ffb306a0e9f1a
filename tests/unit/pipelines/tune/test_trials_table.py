"""``igan tune``'s live trials table (pipelines.tune.progress)."""
from __future__ import annotations

from pipelines.tune.progress import TrialsTable


def test_table_prints_on_state_changes_and_at_most_every_interval():
    now = [0.0]
    lines = []
    table = TrialsTable("val_ssl_error", lines.append, every_s=30, clock=lambda: now[0])
    table.update("a1", "PENDING")
    table.update("b2", "PENDING")
    table.update("a1", "RUNNING")
    assert len(lines) == 3
    now[0] = 10
    table.update("a1", "RUNNING", {"epoch": 1, "val_ssl_error": 0.25})  # no change, too soon: quiet
    assert len(lines) == 3
    now[0] = 40
    table.update("a1", "RUNNING", {"epoch": 2, "val_ssl_error": 0.2})
    assert len(lines) == 4
    assert lines[-1].splitlines() == ["igan tune: trials 1 pending, 1 running",
                                      "  trial  state       epoch  val_ssl_error",
                                      "  a1     running         2  0.2",
                                      "  b2     pending         -  -"]

"""``igan tune``'s live view of its trials: a compact table (trial, state, epochs, the metric so
far) printed whenever a trial changes state, and at most every ``every_s`` seconds while results
come in, so a search that waits for resources or runs long epochs is never silent."""
from __future__ import annotations

import math
import time
from typing import Callable


class TrialsTable:
    """Keeps each trial's state and last result; :meth:`render` draws the table."""

    def __init__(self, metric: str, log: Callable[[str], None], every_s: float = 30.0, clock=time.monotonic):
        self.metric, self.log, self.every_s, self.clock = metric, log, every_s, clock
        self.rows: dict[str, dict] = {}
        self.last_shown = -math.inf

    def update(self, trial_id: str, state: str, result: dict | None = None, force: bool = False) -> None:
        """Record ``trial_id``'s ``state`` (and its latest ``result``); print the table when a state
        changed, or when ``every_s`` passed since the last print."""
        row = self.rows.setdefault(trial_id, {"state": None, "epoch": None, "value": None})
        changed = row["state"] != state
        row["state"] = state
        if result:
            row["epoch"] = result.get("epoch", row["epoch"])
            row["value"] = result.get(self.metric, row["value"])
        if force or changed or self.clock() - self.last_shown >= self.every_s:
            self.log(self.render())
            self.last_shown = self.clock()

    def render(self) -> str:
        """The table as text: a summary line, then one line per trial."""
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        head = "igan tune: trials " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        width = max([len(t) for t in self.rows] + [5])
        lines = [head, f"  {'trial'.ljust(width)}  {'state':10}  {'epoch':>5}  {self.metric}"]
        for tid, row in self.rows.items():
            value = "-" if row["value"] is None else f"{row['value']:.4g}"
            epoch = "-" if row["epoch"] is None else str(row["epoch"])
            lines.append(f"  {tid.ljust(width)}  {row['state'].lower():10}  {epoch:>5}  {value}")
        return "\n".join(lines)


def trials_table_callback(table: TrialsTable):
    """A Ray Tune callback feeding ``table`` (trial starts, results, completions, errors). Not
    pickled with the search's state (its table and console belong to this run)."""
    from ray.tune import Callback

    class TrialsTableCallback(Callback):
        def __init__(self):
            self.table = table

        def __getstate__(self):
            return {}

        def __setstate__(self, state):
            self.table = None

        def _update(self, trial, state: str, result: dict | None = None) -> None:
            if self.table is not None:
                self.table.update(trial.trial_id, state, result)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._update(trial, "RUNNING")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._update(trial, "RUNNING", result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._update(trial, "TERMINATED", trial.last_result)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._update(trial, "ERROR", trial.last_result)

    return TrialsTableCallback()

"""Which processes use the CPU: each process's share of one core over a window, busiest first.

Run it beside a benchmark to see where a slowdown goes (e.g. Ray's own actors beside a training
worker): ``--after`` seconds of waiting, then ``--window`` seconds measured. Prints one JSON line:
``{"window_s", "total_cores", "processes": [{"pid", "cores", "command"}, ...]}`` where ``cores`` is
CPU seconds per wall second (1.0 = one core busy all the time).

    .venv/bin/python benchmarks/cpu_by_process.py --after 60 --window 30 [--top 15]
"""
from __future__ import annotations

import argparse
import json
import time

import psutil


def cpu_seconds() -> dict[int, tuple[float, str]]:
    """CPU seconds (user + system) used so far and the command line, by pid."""
    seen = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        command = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])
        seen[proc.pid] = (times.user + times.system, command[:120])
    return seen


def busiest(window_s: float, top: int) -> dict:
    """Each process's CPU cores over ``window_s`` seconds (processes that started inside the window
    count from zero), the ``top`` busiest first."""
    before, t0 = cpu_seconds(), time.perf_counter()
    time.sleep(window_s)
    after, elapsed = cpu_seconds(), time.perf_counter() - t0
    rows = [{"pid": pid, "cores": round((used - before.get(pid, (0.0, ""))[0]) / elapsed, 4), "command": command}
            for pid, (used, command) in after.items()]
    rows.sort(key=lambda row: -row["cores"])
    return {"window_s": round(elapsed, 2), "total_cores": round(sum(row["cores"] for row in rows), 3),
            "processes": rows[:top]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--after", type=float, default=0.0, help="seconds to wait before measuring")
    p.add_argument("--window", type=float, default=30.0, help="seconds measured")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    if args.window <= 0 or args.after < 0 or args.top < 1:
        p.error("--window must be above 0, --after at least 0, --top at least 1")
    time.sleep(args.after)
    print(json.dumps({"benchmark": "cpu_by_process", **busiest(args.window, args.top)}))


if __name__ == "__main__":
    main()

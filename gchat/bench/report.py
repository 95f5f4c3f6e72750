"""Benchmark output: the results table, the JSON file of a run, and the chart."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .runner import LOAD_CPU_LIMIT, BenchRun

__all__ = ["machine", "print_table", "save_json", "write_chart"]

# (figure key, column title) in the order the table shows them
COLUMNS = [
    ("deliveries_per_s", "deliveries/s"), ("says_per_s", "says/s"), ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"), ("p999_ms", "p99.9 ms"), ("lost", "lost"), ("seq_gaps", "seq gaps"),
    ("register_s", "register s"), ("rss_per_session_kib", "KiB/session"), ("server_cpu_pct", "server CPU %"),
    ("load_cpu_pct", "load CPU %"), ("other_cpu_pct", "other CPU %"),
]
LOAD_CPU_KEYS = {"load_cpu_pct"}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release()}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(runs: list[BenchRun], console: Console | None = None) -> None:
    """One row per scenario, server and transport, the columns any of them has."""
    console = console or Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log or a pipe: never squeeze the figures
    present = [(key, title) for key, title in COLUMNS if any(key in run.figures for run in runs)]
    notes = any(run.status != "ok" for run in runs)
    table = Table(title="gchat benchmark")
    table.add_column("scenario")
    table.add_column("server")
    table.add_column("transport")  # the subscribers' door
    table.add_column("load")  # the load generator: c or python
    for _, title in present:
        table.add_column(title, justify="right")
    if notes:
        table.add_column("result")
    for run in runs:
        cells: list[str | Text] = [_load_cell(run, key) if key in LOAD_CPU_KEYS
                                   else _cell(run.figures.get(key)) for key, _ in present]
        if notes:
            cells.append(_result(run))
        table.add_row(run.scenario, run.server, run.transport, run.load, *cells)
    console.print(table)
    if any(run.load_busy is not None for run in runs):
        console.print(f"(*: the load passed {LOAD_CPU_LIMIT:g}% of its core; for idle, the figure in "
                      "brackets is while registering)")


def _load_cell(run: BenchRun, key: str) -> str | Text:
    """The load's CPU: marked * when the load passed LOAD_CPU_LIMIT (for idle, with its
    share while registering, which is what idle times)."""
    text = _cell(run.figures.get(key))
    registering = run.figures.get("register_load_cpu_pct")
    if registering is not None and registering > LOAD_CPU_LIMIT:
        text += f" ({_cell(registering)})"
    if run.load_busy is None:
        return text
    return Text(text + " *", style="bold yellow")


def _result(run: BenchRun) -> Text:
    """The result cell: empty when the run is ok, else its status and how far it got.
    (Text, not markup: a detail may hold brackets.)"""
    if run.status == "ok":
        return Text("")
    style = {"timed out": "bold yellow", "skipped": "dim"}.get(run.status, "bold red")
    return Text.assemble((run.status, style), f": {run.detail}")


def save_json(runs: list[BenchRun], directory: Path, command: str) -> Path:
    """Write the run to `directory`/<timestamp>.json; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / time.strftime("%Y%m%d-%H%M%S.json")
    payload = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command,
               "machine": machine(), "runs": [asdict(run) for run in runs]}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def _colour(server: str) -> str:
    """gchat's bars red (lighter without its durable store), the others grey."""
    if server.startswith("gchat-memory"):
        return "#ff9896"
    if server.startswith("gchat") and "cluster" not in server:
        return "#d62728"
    return "#7f7f7f"


def write_chart(result_file: Path, output: Path) -> None:
    """A PNG of deliveries/s, says/s and latency per server, from a results file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = json.loads(result_file.read_text())["runs"]
    panels = [("fan-out", "deliveries_per_s", "fan-out: deliveries/s"),
              ("ping-pong", "says_per_s", "ping-pong: says/s"),
              ("many-rooms", "p99_ms", "many-rooms: p99 latency, ms"),
              ("idle", "rss_per_session_kib", "idle: KiB per session")]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for axis, (scenario, key, title) in zip(axes, panels, strict=False):
        rows = [(run["server"] + (f"/{run['transport']}" if run.get("transport", "json") != "json"
                                  else ""),
                 run["figures"].get(key)) for run in runs if run["scenario"] == scenario]
        rows = [(server, value) for server, value in rows if value is not None]
        axis.bar([server for server, _ in rows], [value for _, value in rows],
                 color=[_colour(server) for server, _ in rows])
        axis.set_title(title, fontsize=10)
        if key.endswith("_ms"):
            axis.set_yscale("log")  # an overloaded server is seconds behind, the rest milliseconds
        axis.tick_params(axis="x", labelsize=8)
        plt.setp(axis.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
        for index, (_, value) in enumerate(rows):
            axis.annotate(_cell(value), (index, value), ha="center", va="bottom", fontsize=8)
    stores = {run.get("store") or "sqlite" for run in runs if run["server"] == "gchat"}
    history = "SQLite history" if stores <= {"sqlite"} else "history in memory"
    figure.suptitle(f"gchat ({history}; gchat-memory: history in memory; every PROTOCOL.md "
                    "guarantee on) against baselines with neither", fontsize=10)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)

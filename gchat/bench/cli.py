"""The `gchat-bench` command: run scenarios against gchat and the baselines, chart them."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .load import main as load_main
from .report import print_table, save_json, write_chart
from .runner import (
    LOAD_CPU_LIMIT,
    LOADS,
    ROOT,
    SCALES,
    SERVERS,
    TRANSPORTS,
    BenchFailed,
    BenchRun,
    build_c_load,
    run_scenario,
    store_of,
)

__all__ = ["main"]

SCENARIO_NAMES = ("fan-out", "many-rooms", "ping-pong", "idle")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Benchmark gchat's greenlet concurrency against thread, asyncio, uvloop and gevent servers."""


@main.command()
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(SCENARIO_NAMES),
              help="Scenario to run (repeatable) [default: all].")
@click.option("--server", "servers", multiple=True, type=click.Choice(SERVERS),
              help="Server under test (repeatable) [default: gchat].")
@click.option("--duration", type=click.FloatRange(0.2, 20), default=10.0, show_default=True,
              help="Seconds each scenario measures.")
@click.option("--procs", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Load processes.")
@click.option("--load", type=click.Choice(LOADS), default="c", show_default=True,
              help="The load generator: c (bench/loadgen, one epoll thread; built with make "
                   "loadgen when missing or stale) or python (greenlets, gchat/bench/load.py).")
@click.option("--scale", type=click.Choice(sorted(SCALES)), default="full", show_default=True,
              help="Scenario sizes: full (the published figures) or smoke (a quick check).")
@click.option("--store", type=click.Choice(["sqlite", "memory"]), default="sqlite", show_default=True,
              help="gchat's history store (gchat-memory's is always memory).")
@click.option("--results", type=click.Path(file_okay=False, path_type=Path),
              default=ROOT / "bench" / "results", show_default=True, help="Where to write the JSON.")
@click.option("--transport", "transports", multiple=True, type=click.Choice(TRANSPORTS),
              help="The subscribers' door (repeatable; each scenario and server runs once per "
                   "transport): json, irc (gchat's IRC port) or ws (WebSocket on gchat's HTTP "
                   "port); publishers stay JSON; the baselines are skipped [default: json].")
@click.option("--server-arg", "server_args", multiple=True,
              help="Extra flag for gchat (repeatable), e.g. --server-arg=--gc-interval=0.")
@click.option("--profile", is_flag=True,
              help="Run each server under py-spy; flame graphs go next to the JSON.")
def run(scenarios: tuple[str, ...], servers: tuple[str, ...], duration: float, procs: int,
        load: str, scale: str, store: str, results: Path, transports: tuple[str, ...],
        server_args: tuple[str, ...], profile: bool) -> None:
    """Run the scenarios; print a table and write one JSON file."""
    if load == "c":
        try:
            build_c_load()
        except BenchFailed as exc:
            raise click.ClickException(f"{exc} (or run with --load python)") from None
    scenarios = scenarios or SCENARIO_NAMES
    servers = servers or ("gchat",)
    transports = tuple(dict.fromkeys(transports)) or ("json",)
    runs: list[BenchRun] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("starting", total=len(scenarios) * len(servers) * len(transports))
        for scenario in scenarios:
            for server in servers:
                for transport in transports:  # one after the other: JSON and IRC side by side
                    suffix = "" if transport == "json" else f"-{transport}"
                    progress.update(task, description=f"{scenario} on {server}{suffix}")
                    try:
                        flame = results / f"{scenario}-{server}{suffix}.svg" if profile else None
                        if flame:
                            results.mkdir(parents=True, exist_ok=True)
                        runs.append(run_scenario(server, scenario, SCALES[scale][scenario],
                                                 duration=duration, procs=procs, store=store,
                                                 profile=flame, server_args=server_args,
                                                 transport=transport, load=load))
                    except BenchFailed as exc:
                        # Still a row (and an entry in the JSON): the table says what failed.
                        runs.append(BenchRun(server, scenario, SCALES[scale][scenario], duration,
                                             procs, status="failed", detail=str(exc),
                                             transport=transport, load=load,
                                             store=store_of(server, store)))
                    progress.advance(task)
    print_table(runs)
    path = save_json(runs, results, shlex.join(["gchat-bench", *sys.argv[1:]]))
    click.echo(f"results: {path}")
    for bench_run in runs:
        busy = bench_run.load_busy
        if busy is not None:
            hint = "try more --procs" if bench_run.load == "c" else "try --load c or more --procs"
            click.echo(f"note: the {bench_run.load} load of {bench_run.label} used {busy}% of a "
                       f"core (over {LOAD_CPU_LIMIT:g}%): it may measure itself; {hint}", err=True)
    # A baseline that cannot keep up (or breaks, or has no IRC door) is a result; gchat's
    # own failure fails the run.
    failed = [f"{r.label} {r.status}: {r.detail}" for r in runs
              if r.status != "ok" and (r.server == "gchat" or r.server.startswith("gchat-"))]
    if failed:
        raise click.ClickException("gchat did not complete: " + "; ".join(failed))


@main.command()
@click.argument("result_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=ROOT / "docs" / "benchmarks.png", show_default=True)
def chart(result_file: Path, output: Path) -> None:
    """Draw a results file as a PNG (needs matplotlib: requirements-bench.txt)."""
    try:
        write_chart(result_file, output)
    except ImportError:
        raise click.ClickException("the chart needs matplotlib: "
                                   "pip install -r requirements-bench.txt") from None
    click.echo(f"chart: {output}")


@main.command(hidden=True)
def load() -> None:
    """A load process: serves one job from the runner on stdin/stdout."""
    load_main()

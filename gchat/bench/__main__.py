"""Entry point: `python -m gchat.bench`. The only place the benchmark monkey-patches."""

from gevent import monkey

monkey.patch_all()

from gchat.bench.cli import main  # noqa: E402

main(prog_name="gchat-bench")

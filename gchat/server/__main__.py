"""Entry point: `python -m gchat.server`. The only place the server monkey-patches."""

from gevent import monkey

monkey.patch_all()

from gchat.server.cli import main  # noqa: E402

main(prog_name="gchat-server")

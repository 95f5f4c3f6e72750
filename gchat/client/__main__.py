"""Entry point: `python -m gchat.client`. The only place the client monkey-patches
(prompt_toolkit's asyncio loop then waits on gevent's hub, beside the network)."""

from gevent import monkey

monkey.patch_all()

from gchat.client.cli import main  # noqa: E402

main(prog_name="gchat-client")

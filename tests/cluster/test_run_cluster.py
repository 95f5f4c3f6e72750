"""`make run-cluster` (bin/gchat-cluster): Redis and two nodes, stopped by one Ctrl-C."""

from __future__ import annotations

import os
import re
import signal

import gevent
from gevent import subprocess

from tests.cluster.conftest import free_port, free_port_pair, redis_server_binary
from tests.rawclient import Client
from tests.server.process import ROOT

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


def test_run_cluster_starts_two_nodes_that_share_rooms_and_stops_on_ctrl_c(tmp_path):
    redis_server_binary()
    base, redis_port = free_port_pair(), free_port()
    env = {**os.environ, "GCHAT_PORT": str(base), "GCHAT_IRC_PORT": "0", "GCHAT_HTTP_PORT": "0",
           "GCHAT_REDIS_PORT": str(redis_port), "GCHAT_REDIS_DIR": str(tmp_path)}
    script = subprocess.Popen([str(ROOT / "bin" / "gchat-cluster"), "--idle-timeout", "30"], env=env,
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              start_new_session=True)  # its own group: killed whole if it fails
    try:
        ports, log = set(), b""
        with gevent.Timeout(20, AssertionError("the nodes did not start")):
            while len(ports) < 2:
                line = script.stderr.readline()
                assert line, f"the cluster exited early:\n{log.decode()}"
                log += line
                if match := LISTENING.search(line):
                    ports.add(int(match.group(1)))
        assert ports == {base, base + 1}
        alice, bob = (Client(("127.0.0.1", port)) for port in sorted(ports))
        alice.hello("alice")
        bob.hello("bob")
        alice.join("lobby")
        bob.join("lobby")
        assert alice.request("say", room="lobby", text="hi")["seq"] == 1
        assert bob.recv_until(lambda f: f["op"] == "msg")[-1]["text"] == "hi"

        script.send_signal(signal.SIGINT)  # what Ctrl-C sends
        with gevent.Timeout(20, AssertionError("the cluster did not stop")):
            rest = script.stderr.read()
            assert script.wait() == 0, (log + rest).decode()
        assert alice.read_until_closed()[-1] == {"op": "bye", "reason": "shutdown"}
        assert bob.read_until_closed()[-1] == {"op": "bye", "reason": "shutdown"}
    finally:
        if script.poll() is None:  # it failed to stop: leave nothing running
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
    assert (tmp_path / "appendonlydir").is_dir()  # Redis kept its data where it was told
    try:  # and it stopped too
        Client(("127.0.0.1", redis_port)).close()
        raise AssertionError("redis-server is still running")
    except ConnectionRefusedError:
        pass

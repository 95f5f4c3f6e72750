"""Fixtures for the chat page's tests: the server as users run it (a subprocess with an
HTTP port), and headless Chromium driven by Selenium through Debian's chromedriver.

Selenium's calls block (the suite does not monkey-patch), so nothing here relies on
gevent running meanwhile: the server's log is read by a thread, and browsers start in
threads of their own.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.rawclient import Client

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
VIEWPORT = (1100, 700)  # the page's size unless a test asks for another
TIMEOUT = 10.0  # seconds any one condition may take to come true


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        return (f"{' and '.join(missing)} not installed "
                "(apt-get install chromium chromium-driver fonts-liberation)")
    return None


def free_port() -> int:
    """A TCP port nothing listens on now (the HTTP port must be known before the
    server starts, so that a restarted server can take the same one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer:
    """`python -m gchat.server` with the page on `http_port` and PROTOCOL.md on a TCP
    port of its choosing (`port`), history in the SQLite file `store`."""

    def __init__(self, http_port: int, store: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.http_port = http_port
        self.url = f"http://127.0.0.1:{http_port}/"
        # Only this test's settings: none from the environment the suite runs in.
        clean = {name: value for name, value in os.environ.items() if not name.startswith("GCHAT_")}
        command = [sys.executable, "-m", "gchat.server", "--host", "127.0.0.1", "--port", "0",
                   "--irc-port", "0", "--http-port", str(http_port), "--store", f"sqlite:{store}",
                   "--grace", "1", *args]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**clean, **(env or {})}, start_new_session=True, text=True)
        self.log: list[str] = []
        self._grew = threading.Condition()
        threading.Thread(target=self._read_log, daemon=True).start()
        with self._grew:
            started = self._grew.wait_for(lambda: self.port is not None or self.proc.poll() is not None,
                                          timeout=20)
        assert started and self.port is not None, "the server did not start:\n" + "".join(self.log)

    @property
    def port(self) -> int | None:
        """The TCP port, once both ports listen."""
        ports = {int(match.group(1)) for line in self.log if (match := LISTENING.search(line))}
        others = ports - {self.http_port}
        return others.pop() if self.http_port in ports and others else None

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._grew:
                self.log.append(line)
                self._grew.notify_all()
        with self._grew:
            self._grew.notify_all()

    def client(self, nick: str | None = None, **hello: Any) -> Client:
        """A raw TCP client (tests/rawclient.py), registered as `nick` if given."""
        assert self.port is not None
        client = Client(("127.0.0.1", self.port))
        _clients.append(client)  # closed after the test, passed or failed (see below)
        if nick is not None:
            client.hello(nick, **hello)
        return client

    def stop(self) -> int:
        """SIGTERM, as an operator would; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


_clients: list[Client] = []


@pytest.fixture(autouse=True)
def close_tcp_clients() -> Iterator[None]:
    """The TCP clients a test opened are closed after it, so that a failed test does
    not keep a nick that the next test's client asks for (the server is shared)."""
    yield
    while _clients:
        _clients.pop().close()


def start_chromium(*extra: str) -> Any:
    """Headless Chromium through Debian's chromedriver: nothing is downloaded; `extra`
    command-line switches for this browser."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--force-device-scale-factor=1", "--lang=en-US",
                     f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", *extra):
        options.add_argument(argument)
    # An alert() a message managed to run must stay open for the test to see it.
    options.unhandled_prompt_behavior = "ignore"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Size the window so that the page itself gets width x height CSS pixels."""
    driver.set_window_size(width, height)
    inner_width, inner_height = driver.execute_script("return [innerWidth, innerHeight]")
    driver.set_window_size(2 * width - inner_width, 2 * height - inner_height)
    assert driver.execute_script("return [innerWidth, innerHeight]") == [width, height]


@pytest.fixture(scope="module")
def drivers() -> Iterator[list[Any]]:
    """Two browsers for the module (a browser takes seconds to start), started together."""
    if (why := missing_browser()) is not None:
        pytest.skip(why)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start_chromium) for _ in range(2)]
        started = []
        try:
            for future in futures:
                started.append(future.result(timeout=60))
        finally:
            if len(started) < 2:
                for driver in started:
                    driver.quit()
    yield started
    for driver in started:
        driver.quit()


@pytest.fixture(scope="module")
def web_server(tmp_path_factory) -> Iterator[WebServer]:
    """One server for the module's tests; each test uses rooms and nicks of its own."""
    server = WebServer(free_port(), tmp_path_factory.mktemp("web") / "gchat.db")
    yield server
    server.kill()


@pytest.fixture
def fresh_drivers(drivers) -> Iterator[list[Any]]:
    """The module's browsers, on a blank page at the usual size; after the test, no
    script error may have reached the console."""
    for driver in drivers:
        driver.get("about:blank")
        driver.get_log("browser")  # forget what earlier tests logged
        set_viewport(driver, *VIEWPORT)
    yield drivers
    errors = [entry["message"] for driver in drivers for entry in driver.get_log("browser")
              if entry["level"] == "SEVERE" and "Uncaught" in entry["message"]]
    for driver in drivers:
        driver.get("about:blank")  # closes the page's WebSocket: its nick is free again
    assert errors == [], f"script errors in the page: {errors}"


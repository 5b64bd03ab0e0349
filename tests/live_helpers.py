"""Helpers shared by the tests of ``ifshm_ray.live``: a local echo upstream and a bounded wait."""
from __future__ import annotations

import contextlib
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest


def wait_until(cond, timeout_s: float = 5.0, step_s: float = 0.02) -> bool:
    """Poll ``cond`` until true or ``timeout_s`` passes (bounded)."""
    for _ in range(int(timeout_s / step_s)):
        if cond():
            return True
        time.sleep(step_s)
    return bool(cond())


class _Echo(BaseHTTPRequestHandler):
    """HTTP/1.0 (one connection per request): GET answers ``echo <path>``, POST echoes its body."""

    def do_GET(self):
        self._answer(f"echo {self.path}".encode())

    def do_POST(self):
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _answer(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[int]:
    """Serve ``server`` (bound to 127.0.0.1) from a thread; yields its port; shuts it down and joins after."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def upstream():
    """Port of an echo HTTP server on 127.0.0.1, stopped after the test."""
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Echo)) as port:
        yield port

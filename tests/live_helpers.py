"""Helpers shared by the tests of ``ifshm_ray.live``: a bounded wait, servers on 127.0.0.1 run from a thread (an
echo upstream, a fake Ray dashboard Serve API)."""
from __future__ import annotations

import contextlib
import copy
import json
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


class QuietHandler(BaseHTTPRequestHandler):
    """A test server's handler that answers 200 with a body (:meth:`_answer`) and logs nothing."""

    def _answer(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Echo(QuietHandler):
    """HTTP/1.0 (one connection per request): GET answers ``echo <path>``, POST echoes its body."""

    def do_GET(self):
        self._answer(f"echo {self.path}".encode())

    def do_POST(self):
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))


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


def app_detail(name: str, num_replicas: int = 2, imperative: bool = False) -> dict:
    config = {"name": name, "route_prefix": f"/{name}", "import_path": f"pkg.{name}:app",
              "deployments": [{"name": "Model", "user_config": {"version": "good"}}]}
    return {"name": name, "status": "RUNNING", "deployed_app_config": None if imperative else config,
            "deployments": {"Model": {"name": "Model", "status": "HEALTHY",
                                      "deployment_config": {"num_replicas": num_replicas,
                                                            "user_config": {"version": "good"},
                                                            "ray_actor_options": {"num_cpus": 0.5}}}}}


class FakeDashboard:
    """GET returns ``details``; PUT records the body and applies replicas / the app configs."""

    code_replicas = {"target": 2, "other": 1}

    def __init__(self):
        self.details = {"applications": {"target": app_detail("target"), "other": app_detail("other", 1)},
                        "http_options": {"host": "127.0.0.1", "port": 8000, "keep_alive_timeout_s": 5}}
        self.puts: list[dict] = []
        self.fail_put = False

    def apply(self, body: dict) -> None:
        self.puts.append(body)
        apps = {}
        for cfg in body["applications"]:
            detail = copy.deepcopy(self.details["applications"][cfg["name"]])
            detail["deployed_app_config"] = cfg
            for d in cfg.get("deployments", []):  # like Serve: no override in the config -> the code's default
                dcfg = detail["deployments"][d["name"]]["deployment_config"]
                dcfg["num_replicas"] = d.get("num_replicas", self.code_replicas[cfg["name"]])
                dcfg["user_config"] = d.get("user_config")
            apps[cfg["name"]] = detail
        self.details["applications"] = apps

    def handler(self):
        fake = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                self._send(200, json.dumps(fake.details).encode()) if self.path == "/api/serve/applications/" \
                    else self._send(404, b"{}")

            def do_PUT(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if fake.fail_put:
                    return self._send(400, b"ValidationError")
                fake.apply(body)
                self._send(200, b"")

            def _send(self, code, body):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        return H


@pytest.fixture
def dashboard():
    fake = FakeDashboard()
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())) as port:
        fake.url = f"http://127.0.0.1:{port}"
        yield fake

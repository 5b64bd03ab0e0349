"""An in-repo fault proxy: a TCP proxy on 127.0.0.1 with injectable latency, connection resets and HTTP errors.

The live stack puts it on the path between nginx and the Serve HTTP proxy (``tc netem`` is not available on this
kernel and a toxiproxy server is not packaged). Faults are drawn **per connection** (nginx opens one upstream
connection per request unless upstream keep-alive is configured, so that is per request there):

* ``latency_ms``: every chunk read from the client is forwarded upstream this much later (one delay per request
  for ordinary HTTP requests, which arrive in one chunk);
* ``reset_prob``: the connection is read once, then reset (TCP RST) without reaching the upstream;
* ``error_rate``: the request head is read, then answered with ``error_status`` and closed, without reaching the
  upstream.

A fault clears itself after ``duration_s`` (at most :attr:`ProxyConfig.max_fault_s`). Control API (JSON over HTTP
on its own port): ``GET /faults``, ``PUT /faults`` (a :class:`FaultSpec`; 400 with the reason when invalid),
``DELETE /faults``, ``GET /stats``. Both listen on 127.0.0.1 only, and the upstream must be on 127.0.0.1 too.

Run it on its own::

    python -m ifshm_ray.live.proxy --listen 18080 --upstream 8000 --control 18081

or in-process (a thread with its own event loop; ``stop()`` closes every connection)::

    with FaultProxy(upstream_port=8000) as proxy:
        proxy.set_faults(FaultSpec(latency_ms=200, duration_s=30))
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import socket
import struct
import threading
import time
from typing import Any

from pydantic import Field

from ifshm_ray.config import ConfigError, ConfigModel
from ifshm_ray.live.config import ProxyConfig
from ifshm_ray.live.net import check_loopback_host

log = logging.getLogger(__name__)

_CHUNK = 65536
_SHUTDOWN_TURNS, _SHUTDOWN_TURN_S = 50, 0.01  # stop(): at most 50 loop turns of 10 ms
_REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class FaultSpec(ConfigModel):
    """The faults the proxy injects now (all zero: a transparent proxy)."""

    latency_ms: float = Field(0.0, ge=0.0)
    """Delay before forwarding each chunk from the client to the upstream (bounded by ``max_latency_ms``)."""
    reset_prob: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a connection is reset (RST) instead of forwarded."""
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a connection is answered with ``error_status`` instead of forwarded."""
    error_status: int = Field(503, ge=400, le=599)
    """HTTP status of the injected errors."""
    duration_s: float | None = Field(None, gt=0.0)
    """The fault clears itself after this long; None: after the proxy's ``max_fault_s``."""

    def active(self) -> bool:
        return self.latency_ms > 0 or self.reset_prob > 0 or self.error_rate > 0


class FaultProxy:
    """The proxy and its control API, served from a background thread; see the module docstring."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1", listen_port: int = 0,
                 control_port: int = 0, host: str = "127.0.0.1", cfg: ProxyConfig | None = None):
        check_loopback_host(host, "listen")
        check_loopback_host(upstream_host, "upstream")
        self.cfg = cfg or ProxyConfig()
        self.upstream = (upstream_host, upstream_port)
        self.host, self._want_ports = host, (listen_port, control_port)
        self.port: int | None = None
        self.control_port: int | None = None
        self._rng = random.Random(self.cfg.seed)
        self._faults = FaultSpec()
        self._expires = 0.0
        self._lock = threading.Lock()
        self.stats = {"connections": 0, "refused_over_limit": 0, "forwarded": 0, "resets": 0, "errors": 0,
                      "delayed_chunks": 0, "upstream_failures": 0}
        self._active = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._start_error: BaseException | None = None

    # ------------------------------------------------------------------------------------------------ faults
    def set_faults(self, spec: FaultSpec | dict) -> FaultSpec:
        """Replace the current faults (validated; a latency above ``max_latency_ms`` or a duration above
        ``max_fault_s`` raises :class:`ConfigError`)."""
        spec = spec if isinstance(spec, FaultSpec) else FaultSpec.from_dict(spec, source="fault spec")
        if spec.latency_ms > self.cfg.max_latency_ms:
            raise ConfigError(f"latency_ms = {spec.latency_ms} is above the proxy's max_latency_ms = "
                              f"{self.cfg.max_latency_ms}")
        if spec.duration_s is not None and spec.duration_s > self.cfg.max_fault_s:
            raise ConfigError(f"duration_s = {spec.duration_s} is above the proxy's max_fault_s = "
                              f"{self.cfg.max_fault_s}")
        with self._lock:
            self._faults = spec
            self._expires = time.monotonic() + (spec.duration_s or self.cfg.max_fault_s)
        log.info("fault proxy: faults set to %s", spec.model_dump())
        return spec

    def clear_faults(self) -> None:
        with self._lock:
            self._faults, self._expires = FaultSpec(), 0.0

    def faults(self) -> FaultSpec:
        """The faults in force now (cleared ones, also those whose duration ran out, read as all zero)."""
        with self._lock:
            if self._faults.active() and time.monotonic() >= self._expires:
                self._faults = FaultSpec()
            return self._faults

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 10.0) -> "FaultProxy":
        """Start serving in a background thread; returns once both ports listen (raises if they cannot)."""
        if self._thread is not None:
            raise RuntimeError("the fault proxy is already started")
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"the fault proxy did not start within {timeout_s} s")
        if self._start_error is not None:
            self._thread.join(timeout_s)
            self._thread = None
            raise self._start_error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close both servers and every open connection, then join the thread (idempotent)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop closed in between
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise TimeoutError(f"the fault proxy thread did not stop within {timeout_s} s")
            self._thread = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001  (reported to start(); the thread must not die silently)
            if not self._ready.is_set():
                self._start_error = e
                self._ready.set()
            else:
                log.exception("fault proxy stopped with an error")
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task] = set()

        def tracked(handler):
            async def guarded(reader, writer):
                try:
                    await handler(reader, writer)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                        ValueError) as e:  # a peer that went away or sent garbage: close this connection only
                    log.debug("fault proxy connection closed: %r", e)
                finally:
                    writer.transport.abort()

            def on_connect(reader, writer):  # plain function: registered as soon as the connection is made
                if self._stop.is_set():
                    writer.transport.abort()
                    return
                task = asyncio.ensure_future(guarded(reader, writer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            return on_connect

        proxy = await asyncio.start_server(tracked(self._handle), self.host, self._want_ports[0])
        control = await asyncio.start_server(tracked(self._control), self.host, self._want_ports[1])
        self.port = proxy.sockets[0].getsockname()[1]
        self.control_port = control.sockets[0].getsockname()[1]
        self._ready.set()
        log.info("fault proxy on %s -> %s:%s, control on %s", self.url, *self.upstream, self.control_url)
        try:
            await self._stop.wait()
        finally:
            for server in (proxy, control):
                server.close()
            # cancel every handler (each aborts its transports) until none is left for a few loop turns; the
            # turns also let aborted transports close their sockets and late accepts see the stop flag (bounded)
            quiet = 0
            for _ in range(_SHUTDOWN_TURNS):
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.sleep(_SHUTDOWN_TURN_S)
                quiet = quiet + 1 if not tasks else 0
                if quiet >= 3:
                    break
            for server in (proxy, control):
                await server.wait_closed()

    # ------------------------------------------------------------------------------------------------ proxying
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        if self._active >= self.cfg.max_connections:
            self.stats["refused_over_limit"] += 1
            return
        self._active += 1
        try:
            faults = self.faults()
            draw = self._rng.random()
            if draw < faults.reset_prob:
                await asyncio.wait_for(reader.read(_CHUNK), self.cfg.idle_timeout_s)
                self.stats["resets"] += 1
                _reset(writer)
                return
            if draw < faults.reset_prob + faults.error_rate:
                await self._answer_error(reader, writer, faults.error_status)
                return
            await self._forward(reader, writer)
        finally:
            self._active -= 1

    async def _answer_error(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < self.cfg.max_request_head_bytes:
            chunk = await asyncio.wait_for(reader.read(_CHUNK), self.cfg.idle_timeout_s)
            if not chunk:
                break
            head += chunk
        body = json.dumps({"detail": f"injected by the fault proxy: HTTP {status}"}).encode()
        self.stats["errors"] += 1
        writer.write(_http_response(status, body))
        await writer.drain()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream),
                                                          self.cfg.connect_timeout_s)
        except (OSError, asyncio.TimeoutError) as e:
            log.warning("fault proxy: upstream %s:%s unreachable: %r", *self.upstream, e)
            self.stats["upstream_failures"] += 1
            writer.write(_http_response(502, json.dumps({"detail": "fault proxy: upstream unreachable"}).encode()))
            await writer.drain()
            return
        self.stats["forwarded"] += 1
        upward = asyncio.ensure_future(self._pipe(reader, up_writer, delay=True))
        downward = asyncio.ensure_future(self._pipe(up_reader, writer, delay=False))
        try:
            done, _ = await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
            if upward in done and upward.exception() is None and downward not in done:
                await downward  # the client finished sending: pass the whole answer back
        finally:
            for t in (upward, downward):
                t.cancel()
            await asyncio.gather(upward, downward, return_exceptions=True)
            up_writer.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, delay: bool) -> None:
        while True:
            chunk = await asyncio.wait_for(src.read(_CHUNK), self.cfg.idle_timeout_s)
            if not chunk:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            if delay:
                latency = self.faults().latency_ms
                if latency > 0:
                    self.stats["delayed_chunks"] += 1
                    await asyncio.sleep(latency / 1000.0)
            dst.write(chunk)
            await dst.drain()

    # ------------------------------------------------------------------------------------------------ control API
    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.cfg.idle_timeout_s)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, *_ = request_line.split(" ") + ["", ""]
        length = 0
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if length > self.cfg.max_request_head_bytes:
            status, payload = 413, {"detail": f"body over {self.cfg.max_request_head_bytes} bytes"}
        else:
            body = await asyncio.wait_for(reader.readexactly(length), self.cfg.idle_timeout_s) if length else b""
            status, payload = self._control_answer(method, path.split("?")[0], body)
        writer.write(_http_response(status, json.dumps(payload).encode()))
        await writer.drain()

    def _control_answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/stats" and method == "GET":
            return 200, dict(self.stats, active=self._active)
        if path != "/faults":
            return 404, {"detail": "paths: GET/PUT/DELETE /faults, GET /stats"}
        if method == "GET":
            return 200, self.faults().model_dump()
        if method == "DELETE":
            self.clear_faults()
            return 200, self.faults().model_dump()
        if method == "PUT":
            try:
                data = json.loads(body or b"{}")
                return 200, self.set_faults(data).model_dump()
            except (ValueError, ConfigError) as e:
                return 400, {"detail": str(e)}
        return 405, {"detail": f"method {method} not allowed on /faults (GET, PUT, DELETE)"}


def _http_response(status: int, body: bytes) -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer sees a TCP RST (connection reset by peer)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="In-repo fault proxy on 127.0.0.1 (latency, resets, HTTP errors)")
    parser.add_argument("--listen", type=int, required=True, help="port clients connect to")
    parser.add_argument("--upstream", type=int, required=True, help="upstream port on 127.0.0.1")
    parser.add_argument("--control", type=int, required=True, help="control API port")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    proxy = FaultProxy(args.upstream, listen_port=args.listen, control_port=args.control,
                       cfg=ProxyConfig(seed=args.seed)).start()
    try:
        proxy._thread.join()  # until interrupted
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    main()

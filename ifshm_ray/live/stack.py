"""The live target stack on this machine and its supervisor: start all, health-check, stop all.

:class:`LiveStack` brings up, on 127.0.0.1 only and each process under ``timeout`` (it ends by itself after
``StackConfig.max_lifetime_s``), in its own process group (stopped by that group's id, never by a name):

* Redis (feature store, ``maxmemory`` + ``noeviction``), seeded with feature vectors;
* a Ray head (``ray start --head --block``, its own ``--temp-dir`` and ports, dashboard on 127.0.0.1, metrics on
  ``--metrics-export-port``, ``RAY_metrics_report_interval_ms`` lowered, token auth off on loopback) and the Serve
  application ``target`` (:mod:`ifshm_ray.live.target_app`) deployed through the dashboard's declarative PUT;
* the fault proxy (``python -m ifshm_ray.live.proxy``) in front of Serve's HTTP proxy, and nginx in front of it
  (config generated into the run folder; its upstream include file switches between the proxied and the direct
  route: the ``reroute`` handler);
* a model-cache volume: a tmpfs of ``model_cache_bytes`` (root only; otherwise a plain folder and no disk-fill
  fault) holding the model weights, the replicas' scratch files and the prunable folder;
* the bounded loopback load generator through nginx, and an in-process HTTP "sidecar" that exposes its
  client-side view as Prometheus metrics (``ifshm_probe_*``) and receives Alertmanager's webhooks;
* node-exporter, redis-exporter, nginx-exporter, Prometheus (1 s scrape, Ray's file-SD target list, alert rules
  generated from ``data/promql.yaml`` and the simulator's thresholds with a steady-state baseline measured first)
  and Alertmanager (``--cluster.listen-address=``, ``group_wait: 0s``) posting to the sidecar's webhook path.

:meth:`LiveStack.stop` stops everything in reverse order (SIGTERM to each process group, SIGKILL after
``stop_timeout_s``, then every leftover process whose command line names the run folder), unmounts the tmpfs and
removes the run folder. Binaries come from ``scripts/install_live.sh`` (:func:`find_binaries`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx
import yaml

from ifshm_ray.config import ConfigError, SimConfig
from ifshm_ray.live.config import LiveConfig, StackConfig
from ifshm_ray.live.handlers import redis_command, render_upstream
from ifshm_ray.live.loadgen import LoadGenerator
from ifshm_ray.live.net import check_loopback_url
from ifshm_ray.live.serve_api import SERVE_API, record_deploy

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
PROMQL_FILE = Path(__file__).resolve().parent / "data" / "promql.yaml"
SIM_ALERTS_FILE = REPO / "ifshm_ray" / "sim" / "data" / "alerts.yaml"
BINARIES = {"prometheus": "usr/bin/prometheus", "alertmanager": "usr/bin/prometheus-alertmanager",
            "node_exporter": "usr/bin/prometheus-node-exporter", "redis_exporter": "usr/bin/prometheus-redis-exporter",
            "nginx_exporter": "usr/bin/prometheus-nginx-exporter", "redis": "usr/bin/redis-server",
            "nginx": "usr/sbin/nginx"}
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Buckets of the sidecar's client-side latency histogram (seconds)."""
APP, MODEL, GATEWAY = "target", "Model", "Gateway"
ROUTE_PROXIED, ROUTE_DIRECT = "via-proxy", "direct"


class StackError(RuntimeError):
    """The stack could not be brought up (the message names the piece and where its log is)."""


def find_binaries(cache_dir: str | Path) -> tuple[dict[str, Path], str | None]:
    """``(name -> binary path, problem)``: problem is None when every binary of :data:`BINARIES` is there."""
    root = Path(cache_dir).resolve() / "root"
    found = {k: root / v for k, v in BINARIES.items()}
    missing = sorted(k for k, p in found.items() if not p.is_file())
    if missing:
        return found, (f"live stack binaries missing in {root}: {missing}; run scripts/install_live.sh "
                       f"{cache_dir} (apt-get download + dpkg-deb -x, no system change)")
    return found, None


def load_duration_s(cfg: LiveConfig) -> float:
    """How long the stack's load generator runs: ``loadgen.max_duration_s``, by default (None) the stack's
    ``max_lifetime_s``, never longer than it."""
    d = cfg.loadgen.max_duration_s
    return cfg.stack.max_lifetime_s if d is None else min(d, cfg.stack.max_lifetime_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.25) -> Any:
    """Poll ``cond`` until it returns something truthy (exceptions count as not yet); StackError at the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001  (not up yet)
            last = e
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout_s:.0f} s (last error: {last!r})")
        time.sleep(step_s)


def ray_scrape_state(prometheus_url: str) -> str:
    """What a Prometheus has of Ray, for an error message: the ``ray`` job's targets with their health and last
    scrape error, and how many ``ray_serve_*`` series and Serve processing-latency bucket series it holds."""
    def count(promql: str) -> str:
        res = c.get(prometheus_url + "/api/v1/query", params={"query": promql}).json()["data"]["result"]
        return res[0]["value"][1] if res else "0"
    try:
        with httpx.Client(trust_env=False, timeout=5) as c:
            targets = c.get(prometheus_url + "/api/v1/targets").json()["data"]["activeTargets"]
            serve = count('count({__name__=~"ray_serve_.*"})')
            latency = count('count({__name__="ray_serve_deployment_processing_latency_ms_bucket"})')
    except Exception as e:  # noqa: BLE001  (a diagnostic only)
        return f"Prometheus at {prometheus_url} not readable: {e!r}"
    ray = [(t["scrapeUrl"], t["health"], t.get("lastError") or "") for t in targets
           if t["labels"].get("job") == "ray"]
    return (f"Prometheus's ray targets (url, health, last error): {ray}; ray_serve_* series: {serve}; "
            f"processing-latency bucket series: {latency}")


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    with httpx.Client(trust_env=False, timeout=timeout_s) as c:
        return c.get(url).status_code == 200


# ------------------------------------------------------------------------------------------------ processes
@dataclass
class Proc:
    """One supervised process: its own process group, under ``timeout``, output to a log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):  # children left in the group
            os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.returncode


RUN_MARK = "IFSHM_LIVE_RUN"
"""Environment variable set (to the run folder) in every process the stack starts; Ray's workers inherit it."""


def stack_pids(run_dir: str | Path) -> list[int]:
    """Processes of this user that belong to the stack in ``run_dir``: its command line names the run folder, or
    its environment carries ``IFSHM_LIVE_RUN=<run_dir>`` (Ray workers, which start their own sessions)."""
    text, mark = str(run_dir), f"{RUN_MARK}={run_dir}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if d.stat().st_uid != os.getuid():
                continue
            if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") \
                    or mark in (d / "environ").read_bytes().split(b"\0"):
                out.append(int(d.name))
        except OSError:
            continue
    return out


# ------------------------------------------------------------------------------------------------ sidecar
class Sidecar:
    """One HTTP server on 127.0.0.1 (a thread): ``GET /metrics`` exposes the load generator's client-side view
    (``ifshm_probe_requests_total{code}``, ``ifshm_probe_latency_seconds`` histogram, from every request record);
    ``POST <webhook_path>`` records Alertmanager's webhooks with their arrival time (:attr:`webhooks`)."""

    def __init__(self, webhook_path: str):
        self.webhook_path = webhook_path
        self.load: LoadGenerator | None = None
        self.webhooks: list[dict] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True, name="live-sidecar")

    def start(self) -> "Sidecar":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def alerts_since(self, t_wall: float, name: str | None = None, status: str = "firing",
                     started_after: float | None = None) -> list[dict]:
        """Alerts received after wall time ``t_wall`` (each with its webhook's ``received_at``); with
        ``started_after``, only alerts that became active (``startsAt``) after that wall time."""
        with self._lock:
            hooks = list(self.webhooks)
        out = []
        for h in hooks:
            if h["received_at"] < t_wall:
                continue
            for a in h["payload"].get("alerts", []):
                if a.get("status") != status or (name is not None and a["labels"].get("alertname") != name):
                    continue
                if started_after is not None:
                    from ifshm_ray.live.collector import parse_rfc3339
                    try:
                        if parse_rfc3339(a.get("startsAt", "")) < started_after:
                            continue
                    except ValueError:
                        continue
                out.append({**a, "received_at": h["received_at"]})
        return out

    def metrics_text(self) -> str:
        load = self.load
        records = list(load.records) if load is not None else []
        codes: dict[str, int] = {}
        buckets = [0] * len(LATENCY_BUCKETS_S)
        total_s = 0.0
        for r in records:
            code = str(r.status) if r.status is not None else "error"
            codes[code] = codes.get(code, 0) + 1
            s = r.latency_ms / 1000.0
            total_s += s
            for i, le in enumerate(LATENCY_BUCKETS_S):
                if s <= le:
                    buckets[i] += 1
        lines = ["# HELP ifshm_probe_requests_total Load generator requests through nginx, by HTTP status "
                 "(error: no answer).", "# TYPE ifshm_probe_requests_total counter"]
        lines += [f'ifshm_probe_requests_total{{code="{c}"}} {n}' for c, n in sorted(codes.items())]
        lines += ["# HELP ifshm_probe_latency_seconds Load generator request latency.",
                  "# TYPE ifshm_probe_latency_seconds histogram"]
        lines += [f'ifshm_probe_latency_seconds_bucket{{le="{le}"}} {n}' for le, n in zip(LATENCY_BUCKETS_S, buckets)]
        lines += [f'ifshm_probe_latency_seconds_bucket{{le="+Inf"}} {len(records)}',
                  f"ifshm_probe_latency_seconds_sum {total_s}", f"ifshm_probe_latency_seconds_count {len(records)}"]
        return "\n".join(lines) + "\n"

    def _handler(self):
        side = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/metrics":
                    return self._send(200, side.metrics_text().encode(), "text/plain; version=0.0.4")
                self._send(404, b"not found\n", "text/plain")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != side.webhook_path:
                    return self._send(404, b"not found\n", "text/plain")
                try:
                    payload = json.loads(body)
                except ValueError:
                    return self._send(400, b"not JSON\n", "text/plain")
                with side._lock:
                    side.webhooks.append({"received_at": time.time(), "payload": payload})
                self._send(200, b"{}", "application/json")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        return H


# ------------------------------------------------------------------------------------------------ rules
@dataclass
class Baseline:
    """The steady state measured before any fault: from the load generator's own records (the SLO probe's
    reference) and through Prometheus with the very expressions the rules use (the ratio metrics' reference)."""

    p95_s: float
    """Client-side p95 latency from the load generator's records (the SLO probe compares with it)."""
    rps: float
    """Requests per second answered in the steady state."""
    replicas: int
    """Replicas of the model deployment."""
    promql_p95_s: float | None = None
    """Client-side p95 as Prometheus computes it from the probe histogram (bucket interpolation included)."""
    model_p95_ms: float | None = None
    """The model deployment's p95 processing latency from Ray Serve's histogram."""


def promql_map(values: dict[str, Any], path: Path = PROMQL_FILE) -> dict[str, dict[str, str]]:
    """entity -> simulator metric -> PromQL, placeholders filled from ``values``."""
    spec = yaml.safe_load(path.read_text())
    return {ent: {m: q.format(**values) for m, q in ms.items()} for ent, ms in spec["metrics"].items()}


def alert_rules(queries: dict[str, dict[str, str]], for_s: float, path: Path = PROMQL_FILE,
                sim_alerts: Path = SIM_ALERTS_FILE) -> dict:
    """Prometheus rule groups: each (simulator alert, bound entity) of ``path``'s ``alerts`` section as
    ``<the entity's PromQL for the alert's metric> <op> <threshold>``, with the simulator's severity and summary,
    ``for:`` = ``for_s`` and a ``service`` (or ``node``) label with the simulator's entity name."""
    sim = {r["name"]: r for r in yaml.safe_load(sim_alerts.read_text())["rules"]}
    wanted = yaml.safe_load(path.read_text())["alerts"]
    rules = []
    for name, entities in wanted.items():
        if name not in sim:
            raise ConfigError(f"{path}: alert {name!r} is not a simulator alert ({sorted(sim)})")
        r = sim[name]
        for ent in entities:
            q = queries.get(ent, {}).get(r["metric"])
            if q is None:
                raise ConfigError(f"{path}: alert {name} on {ent} needs metric {r['metric']!r} of {ent}, which "
                                  "has no PromQL in the metrics section")
            label = "node" if r["scope"] == "node" else "service"
            rules.append({"alert": name, "expr": f"({q}) {r['op']} {r['threshold']}", "for": f"{for_s:g}s",
                          "labels": {label: ent, "severity": r["severity"]},
                          "annotations": {"summary": r.get("summary", name).replace("{entity}", ent)
                                          .replace("{value:.0f}", "{{ $value }}").replace("{value:.2f}",
                                                                                            "{{ $value }}")}})
    return {"groups": [{"name": "ifshm-live", "rules": rules}]}


# ------------------------------------------------------------------------------------------------ the stack
PORT_NAMES = ("redis", "ray_gcs", "dashboard", "ray_metrics", "dashboard_agent", "serve_http", "proxy",
              "proxy_control", "nginx", "nginx_status", "node_exporter", "redis_exporter", "nginx_exporter",
              "prometheus", "alertmanager")


class Ports:
    """One free port on 127.0.0.1 per name, all distinct (every socket is held until all are chosen)."""

    def __init__(self):
        socks = []
        try:
            for name in PORT_NAMES:
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                socks.append(s)
                setattr(self, name, s.getsockname()[1])
        finally:
            for s in socks:
                s.close()

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in PORT_NAMES}


class LiveStack:
    """See the module docstring. Use as a context manager (``with LiveStack(cfg) as st: ...``)."""

    def __init__(self, cfg: LiveConfig, *, seed: int = 0, sim: SimConfig | None = None):
        self.cfg, self.s, self.seed, self.sim = cfg, cfg.stack, seed, sim or SimConfig()
        self.bins, problem = find_binaries(self.s.cache_dir)
        if problem:
            raise StackError(problem)
        self.lib_path = ":".join(str(Path(self.s.cache_dir).resolve() / "root" / "usr" / "lib" / d)
                                 for d in ("x86_64-linux-gnu", f"{os.uname().machine}-linux-gnu"))
        self.ports = Ports()
        self.procs: list[Proc] = []
        self.run_dir: Path | None = None
        self.own_run_dir = self.s.run_dir is None
        self.mounted = False
        self.sidecar: Sidecar | None = None
        self.load: LoadGenerator | None = None
        self.baseline: Baseline | None = None
        self.queries: dict[str, dict[str, str]] = {}
        self.timings: dict[str, float] = {}

    # -------------------------------------------------------------- paths
    @property
    def cache_mount(self) -> Path:
        return self.run_dir / "model-cache"

    @property
    def prune_folder(self) -> Path:
        return self.cache_mount / "prunable"

    @property
    def ray_temp(self) -> Path:
        return self.run_dir / "ray"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.dashboard}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    @property
    def entry_url(self) -> str:
        """The service's front door (nginx)."""
        return f"http://127.0.0.1:{self.ports.nginx}/"

    @property
    def proxy_control_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.proxy_control}"

    @property
    def deploy_history(self) -> Path:
        return self.run_dir / "deploys.jsonl"

    @property
    def nginx_upstream_file(self) -> Path:
        return self.run_dir / "nginx" / "upstream.conf"

    @property
    def nginx_routes(self) -> dict[str, str]:
        return {ROUTE_PROXIED: f"127.0.0.1:{self.ports.proxy}", ROUTE_DIRECT: f"127.0.0.1:{self.ports.serve_http}"}

    def nginx_cmd(self, *extra: str) -> list[str]:
        d = self.run_dir / "nginx"
        return [str(self.bins["nginx"]), "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log"),
                *extra]

    def log_files(self) -> dict[str, list[Path]]:
        """Live component name (binding) -> its log files now (Serve replica logs appear as replicas start)."""
        serve_logs = sorted((self.ray_temp / "session_latest" / "logs" / "serve").glob("replica_target_*.log")) \
            if self.run_dir else []
        return {"nginx": [self.run_dir / "nginx" / "error.log"], "redis": [self.run_dir / "redis" / "redis.log"],
                "model": [p for p in serve_logs if f"_{MODEL}_" in p.name],
                "gateway": [p for p in serve_logs if f"_{GATEWAY}_" in p.name]}

    # -------------------------------------------------------------- processes
    def _spawn(self, name: str, cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> Proc:
        log_path = self.run_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "LD_LIBRARY_PATH": self.lib_path, RUN_MARK: str(self.run_dir), **(env or {})}
        lifetime = f"{self.s.max_lifetime_s:g}"
        with open(log_path, "ab") as out:
            p = subprocess.Popen(["timeout", "-k", f"{self.s.stop_timeout_s:g}", lifetime, *cmd], stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
                                 cwd=str(cwd or self.run_dir), start_new_session=True)
        proc = Proc(name, p, log_path)
        self.procs.append(proc)
        log.info("started %s (pgid %d): %s", name, p.pid, " ".join(cmd)[:300])
        return proc

    def _check_alive(self, proc: Proc) -> None:
        if not proc.alive():
            tail = proc.log_path.read_text(errors="replace")[-1500:] if proc.log_path.exists() else ""
            raise StackError(f"{proc.name} exited with {proc.popen.returncode}; log {proc.log_path}:\n{tail}")

    # -------------------------------------------------------------- start
    def __enter__(self) -> "LiveStack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "LiveStack":
        t0 = time.monotonic()
        self.run_dir = Path(tempfile.mkdtemp(prefix="ifl-", dir="/tmp")) if self.own_run_dir \
            else Path(self.s.run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        steps = [("model_cache", self._start_model_cache), ("redis", self._start_redis), ("ray", self._start_ray),
                 ("serve", self._deploy_serve), ("proxy", self._start_proxy), ("nginx", self._start_nginx),
                 ("load", self._start_load), ("exporters", self._start_exporters),
                 ("baseline", self._measure_baseline), ("monitoring", self._start_monitoring),
                 ("calibrate", self._calibrate)]
        deadline = t0 + self.s.startup_timeout_s
        for name, step in steps:
            t = time.monotonic()
            if t > deadline:
                raise StackError(f"startup_timeout_s = {self.s.startup_timeout_s} passed before {name}")
            step()
            self.timings[name] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - t0
        log.info("live stack up in %.1f s: %s", self.timings["total"], self.timings)
        return self

    def _start_model_cache(self) -> None:
        self.cache_mount.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and shutil.which("mount"):
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.s.model_cache_bytes},mode=0700", "tmpfs",
                                str(self.cache_mount)], capture_output=True, text=True, timeout=10)
            self.mounted = r.returncode == 0
            if not self.mounted:
                log.warning("tmpfs mount failed (%s): the model cache is a plain folder", r.stderr.strip())
        self.prune_folder.mkdir(exist_ok=True)
        from ifshm_ray.live.modelcache import write_models
        write_models(self.cache_mount, self.s.model_versions, self.s.model_features, self.seed)

    def _start_redis(self) -> None:
        d = self.run_dir / "redis"
        d.mkdir()
        proc = self._spawn("redis", [str(self.bins["redis"]), "--port", str(self.ports.redis), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--dir", str(d), "--logfile",
                                     str(d / "redis.log"), "--maxmemory", str(self.s.redis_maxmemory_bytes),
                                     "--maxmemory-policy", "noeviction", "--protected-mode", "yes"])
        wait_for(lambda: redis_command(self.ports.redis, "PING") == "PONG", 20, f"redis (log {d / 'redis.log'})")
        self._check_alive(proc)
        import numpy as np
        rng = np.random.default_rng(self.seed + 1)
        for i in range(self.s.feature_keys):
            redis_command(self.ports.redis, "SET", f"feat:{i}",
                          json.dumps([round(float(x), 4) for x in rng.normal(size=self.s.model_features)]))

    def _start_ray(self) -> None:
        ray_bin = Path(sys.executable).parent / "ray"
        env = {"RAY_AUTH_MODE": "disabled", "RAY_metrics_report_interval_ms": str(self.s.ray_metrics_report_interval_ms),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_HTTP_HOST": "127.0.0.1"}
        proc = self._spawn("ray", [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                                   f"--port={self.ports.ray_gcs}", f"--num-cpus={self.s.ray_num_cpus}",
                                   "--num-gpus=0", f"--temp-dir={self.ray_temp}", "--include-dashboard=true",
                                   "--dashboard-host=127.0.0.1", f"--dashboard-port={self.ports.dashboard}",
                                   f"--metrics-export-port={self.ports.ray_metrics}", "--disable-usage-stats",
                                   f"--dashboard-agent-listen-port={self.ports.dashboard_agent}"],
                           env=env, cwd=REPO)
        wait_for(lambda: (self._check_alive(proc), http_ok(self.dashboard_url + SERVE_API))[1],
                 self.s.startup_timeout_s, f"Ray dashboard (log {proc.log_path})", step_s=1.0)

    def app_config(self) -> dict:
        return {"name": APP, "route_prefix": "/", "import_path": "ifshm_ray.live.target_app:app_builder",
                "args": {"cache_dir": str(self.cache_mount), "service_ms": self.s.model_service_ms,
                         "scratch_bytes": self.s.scratch_bytes, "redis_port": self.ports.redis,
                         "feature_keys": self.s.feature_keys, "ttl_s": self.s.prediction_ttl_s,
                         "prediction_bytes": self.s.prediction_bytes},
                "deployments": [
                    {"name": MODEL, "num_replicas": self.s.model_replicas,
                     "user_config": {"model_version": self.s.model_versions[0], "extra_latency_ms": 0},
                     "ray_actor_options": {"num_cpus": self.s.replica_num_cpus}},
                    {"name": GATEWAY, "num_replicas": 1, "ray_actor_options": {"num_cpus": self.s.replica_num_cpus}}]}

    def _deploy_serve(self) -> None:
        body = {"http_options": {"host": "127.0.0.1", "port": self.ports.serve_http},
                "applications": [self.app_config()]}
        with httpx.Client(trust_env=False, timeout=30) as c:
            r = c.put(self.dashboard_url + SERVE_API, json=body)
        if r.status_code >= 300:
            raise StackError(f"Serve deploy PUT answered {r.status_code}: {r.text[:500]}")
        record_deploy(self.deploy_history, self.app_config())
        self.wait_app_running(self.s.startup_timeout_s)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.ports.serve_http}/?id=1", 5), 60, "Serve HTTP route")

    def app_status(self) -> dict:
        with httpx.Client(trust_env=False, timeout=10) as c:
            apps = c.get(self.dashboard_url + SERVE_API).json().get("applications") or {}
        return apps.get(APP) or {}

    def wait_app_running(self, timeout_s: float) -> None:
        def running():
            app = self.app_status()
            if app.get("status") in ("DEPLOY_FAILED",):
                raise StackError(f"Serve application {APP} failed to deploy: {app.get('message')}")
            return app.get("status") == "RUNNING"
        wait_for(running, timeout_s, f"Serve application {APP!r} RUNNING", step_s=1.0)

    def replicas_healthy(self) -> bool:
        """True when the model deployment is HEALTHY (every replica up)."""
        dep = (self.app_status().get("deployments") or {}).get(MODEL) or {}
        return dep.get("status") == "HEALTHY"

    def model_replica_pid(self) -> int | None:
        """Pid of one running model replica (from the dashboard's actor list), for the hung-replica fault."""
        with httpx.Client(trust_env=False, timeout=10) as c:
            r = c.get(self.dashboard_url + "/api/v0/actors", params={"filters": "state=ALIVE", "limit": 1000,
                                                                      "detail": "true"})
        rows = (r.json().get("data") or {}).get("result") or {}
        rows = rows.get("result", rows) if isinstance(rows, dict) else rows
        for a in rows:  # the state API can still list a replica that was just replaced: check /proc too
            if str(a.get("name", "")).startswith(f"SERVE_REPLICA::{APP}#{MODEL}#") and a.get("pid"):
                try:
                    cmd = Path(f"/proc/{int(a['pid'])}/cmdline").read_bytes()
                except OSError:
                    continue
                if f"ServeReplica:{APP}:{MODEL}".encode() in cmd:
                    return int(a["pid"])
        return None

    def _start_proxy(self) -> None:
        proc = self._spawn("fault-proxy", [sys.executable, "-m", "ifshm_ray.live.proxy", "--listen",
                                           str(self.ports.proxy), "--upstream", str(self.ports.serve_http),
                                           "--control", str(self.ports.proxy_control), "--seed", str(self.seed)],
                           env={"PYTHONPATH": str(REPO)}, cwd=REPO)
        wait_for(lambda: (self._check_alive(proc), http_ok(self.proxy_control_url + "/faults"))[1], 30,
                 f"fault proxy (log {proc.log_path})")

    def _start_nginx(self) -> None:
        d = self.run_dir / "nginx"
        for sub in ("client", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        self.nginx_upstream_file.write_text(render_upstream("serve", self.nginx_routes[ROUTE_PROXIED]))
        mime = Path(self.s.cache_dir).resolve() / "root" / "etc" / "nginx" / "mime.types"
        conf = f"""worker_processes 1;
pid {d / 'nginx.pid'};
error_log {d / 'error.log'} warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    {'include ' + str(mime) + ';' if mime.exists() else ''}
    access_log {d / 'access.log'};
    log_format upstream_time '$remote_addr [$time_local] "$request" $status $request_time $upstream_status';
    client_body_temp_path {d / 'tmp/client'};
    proxy_temp_path {d / 'tmp/proxy'};
    fastcgi_temp_path {d / 'tmp/fastcgi'};
    uwsgi_temp_path {d / 'tmp/uwsgi'};
    scgi_temp_path {d / 'tmp/scgi'};
    include {self.nginx_upstream_file};
    server {{
        listen 127.0.0.1:{self.ports.nginx};
        access_log {d / 'access.log'} upstream_time;
        location / {{
            proxy_pass http://serve;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
            proxy_next_upstream off;
        }}
    }}
    server {{
        listen 127.0.0.1:{self.ports.nginx_status};
        location /stub_status {{ stub_status; }}
    }}
}}
"""
        (d / "nginx.conf").write_text(conf)
        test = subprocess.run(self.nginx_cmd("-t"), capture_output=True, text=True, timeout=10,
                              env={**os.environ, "LD_LIBRARY_PATH": self.lib_path})
        if test.returncode != 0:
            raise StackError(f"nginx -t failed: {test.stderr[-1000:]}")
        self._spawn_nginx(30, through=True)

    def _spawn_nginx(self, timeout_s: float, through: bool) -> Proc:
        """Start nginx and wait until it answers: with ``through``, a request through it to the Serve app (at
        start); otherwise its own status page (a restart during a fault: the app behind it may be failing)."""
        proc = self._spawn("nginx", self.nginx_cmd())
        url = self.entry_url + "?id=1" if through else f"http://127.0.0.1:{self.ports.nginx_status}/stub_status"
        wait_for(lambda: (self._check_alive(proc), http_ok(url, 5))[1], timeout_s,
                 f"nginx (log {self.run_dir / 'nginx' / 'error.log'})")
        return proc

    def nginx_reload_cmd(self) -> list[str]:
        return self.nginx_cmd("-s", "reload")

    @property
    def nginx_config_files(self) -> list[Path]:
        """The files nginx reads at start (its config and the upstream include)."""
        return [self.run_dir / "nginx" / "nginx.conf", self.nginx_upstream_file]

    def restart_nginx(self, timeout_s: float | None = None) -> dict:
        """Restart nginx as its supervisor would (``systemctl restart``): ``QUIT`` to its process group (the master
        finishes the requests in flight, then exits), ``TERM``/``KILL`` when it has not exited after ``timeout_s``,
        then a fresh start with the same files, waiting (at most ``timeout_s``) until it answers on its status
        port (not through to the app: during a fault the app behind it may be failing). Returns the old and new pids and the seconds it took; a failed start raises :class:`StackError`
        (the executor records the action as failed; :func:`~ifshm_ray.live.incident.restore_steady_state` starts
        nginx again)."""
        timeout_s = self.cfg.handlers.reload_timeout_s if timeout_s is None else timeout_s
        t0 = time.monotonic()
        old = [p for p in self.procs if p.name == "nginx"]
        for p in old:
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGQUIT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(timeout_s)
            p.stop(self.s.stop_timeout_s)  # TERM/KILL if still there; kills what is left in the group
            self.procs.remove(p)
        stopped = time.monotonic() - t0
        new = self._spawn_nginx(timeout_s, through=False)
        return {"old_pids": [p.pid for p in old], "new_pid": new.pid, "stop_s": round(stopped, 3),
                "total_s": round(time.monotonic() - t0, 3)}

    def nginx_alive(self) -> bool:
        return any(p.name == "nginx" and p.alive() for p in self.procs)

    def _start_load(self) -> None:
        self.load = LoadGenerator(self.entry_url + "?id=7", self.cfg.loadgen.model_copy(
            update={"max_duration_s": load_duration_s(self.cfg)})).start()
        self.sidecar = Sidecar(self.s.webhook_path).start()
        self.sidecar.load = self.load

    def _start_exporters(self) -> None:
        collectors = [f"--collector.{c}" for c in self.s.node_exporter_collectors]
        self._spawn("node-exporter", [str(self.bins["node_exporter"]), "--collector.disable-defaults", *collectors,
                                      f"--web.listen-address=127.0.0.1:{self.ports.node_exporter}"])
        self._spawn("redis-exporter", [str(self.bins["redis_exporter"]),
                                       f"--redis.addr=redis://127.0.0.1:{self.ports.redis}",
                                       f"--web.listen-address=127.0.0.1:{self.ports.redis_exporter}"])
        self._spawn("nginx-exporter", [str(self.bins["nginx_exporter"]),
                                       f"-nginx.scrape-uri=http://127.0.0.1:{self.ports.nginx_status}/stub_status",
                                       f"-web.listen-address=127.0.0.1:{self.ports.nginx_exporter}"])
        for name, port in (("node-exporter", self.ports.node_exporter), ("redis-exporter", self.ports.redis_exporter),
                           ("nginx-exporter", self.ports.nginx_exporter)):
            wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/metrics"), 30, name)

    def _measure_baseline(self) -> None:
        """Client-side p95 and rate over the load generator's first seconds (after a warm-up), the model's p95
        from the same requests; written into the alert rules."""
        window = max(3.0 * self.s.scrape_interval_s, self.s.rate_window_s)
        tried = []
        for _ in range(self.s.baseline_attempts):  # a busy box may need a window or two to settle after start
            time.sleep(window)
            now = time.monotonic()
            st = self.load.window(since=now - window, until=now, q=0.95)
            if st.requests > 0 and st.success_rate >= 1.0 - self.sim.slo_error_rate:
                break
            tried.append(st)
        else:
            raise StackError(f"no steady state in {self.s.baseline_attempts} windows of {window:.0f} s: {tried}")
        self.timings["baseline_windows"] = len(tried) + 1
        self.baseline = Baseline(p95_s=st.latency_ms / 1000.0, rps=st.requests / window,
                                 replicas=self.s.model_replicas)

    def _start_monitoring(self) -> None:
        d = self.run_dir / "monitoring"
        d.mkdir()
        (d / "rules.yml").write_text(yaml.safe_dump({"groups": []}))  # the rules follow the calibration
        sd = self.ray_temp / "session_latest" / "prom_metrics_service_discovery.json"
        iv = f"{self.s.scrape_interval_s:g}s"
        static = [("node", self.ports.node_exporter), ("redis", self.ports.redis_exporter),
                  ("nginx", self.ports.nginx_exporter), ("probe", self.sidecar.port)]
        prom = {"global": {"scrape_interval": iv, "evaluation_interval": iv, "scrape_timeout": iv},
                "rule_files": [str(d / "rules.yml")],
                "alerting": {"alertmanagers": [{"static_configs": [
                    {"targets": [f"127.0.0.1:{self.ports.alertmanager}"]}]}]},
                # Ray's file-SD list names the node's own address; its exporters also answer on loopback, so the
                # host is rewritten to 127.0.0.1 (the stack talks to 127.0.0.1 only, and each target once)
                "scrape_configs": [{"job_name": "ray", "file_sd_configs": [{"files": [str(sd)]}],
                                    "relabel_configs": [{"source_labels": ["__address__"], "regex": "[^:]+:(\\d+)",
                                                         "replacement": "127.0.0.1:$1",
                                                         "target_label": "__address__"}]}]
                + [{"job_name": j, "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]} for j, p in static]}
        (d / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
        am = {"route": {"receiver": "healer", "group_by": ["alertname", "service", "node"], "group_wait": "0s",
                        "group_interval": "1s", "repeat_interval": "1h"},
              "receivers": [{"name": "healer", "webhook_configs": [
                  {"url": f"{base}{self.s.webhook_path}", "send_resolved": True}
                  for base in [f"http://127.0.0.1:{self.sidecar.port}"]
                  + ([check_loopback_url(self.s.healer_url, "healer")] if self.s.healer_url else [])]}]}
        (d / "alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))
        am_cmd = [str(self.bins["alertmanager"]), f"--config.file={d / 'alertmanager.yml'}",
                  f"--storage.path={d / 'am-data'}", "--cluster.listen-address=",
                  f"--web.listen-address=127.0.0.1:{self.ports.alertmanager}"]
        self._spawn("alertmanager", self.alertmanager_cmd(am_cmd))
        self._spawn("prometheus", [str(self.bins["prometheus"]), f"--config.file={d / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={d / 'tsdb'}", "--storage.tsdb.retention.time=1d",
                                   f"--web.listen-address=127.0.0.1:{self.ports.prometheus}", "--web.enable-lifecycle"])
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.ports.alertmanager}/-/ready"), 30, "alertmanager")
        wait_for(lambda: http_ok(self.prometheus_url + "/-/ready"), 30, "prometheus")
        wait_for(lambda: self.targets_up() >= len(static) + 1, 60, "prometheus targets up")

    def query(self, promql: str) -> float | None:
        """An instant query's single value (None when empty or not finite)."""
        with httpx.Client(trust_env=False, timeout=10) as c:
            res = c.get(self.prometheus_url + "/api/v1/query", params={"query": promql}).json()["data"]["result"]
        if not res:
            return None
        v = float(res[0]["value"][1])
        return v if v == v and abs(v) != float("inf") else None

    def _calibrate(self) -> None:
        """Once Prometheus holds a full rate window of steady state, measure the reference values with the
        rules' own expressions, then write the alert rules and reload Prometheus."""
        w = f"{self.s.rate_window_s:g}s"
        client_q = f"histogram_quantile(0.95, sum by (le) (rate(ifshm_probe_latency_seconds_bucket[{w}])))"
        model_q = (f'histogram_quantile(0.95, sum by (le) (rate(ray_serve_deployment_processing_latency_ms_bucket'
                   f'{{deployment="{MODEL}"}}[{w}])))')
        time.sleep(self.s.rate_window_s + 2 * self.s.scrape_interval_s)
        b = self.baseline
        b.promql_p95_s = wait_for(lambda: self.query(client_q), self.s.steady_state_timeout_s,
                                   "steady-state client p95 in Prometheus")
        try:
            b.model_p95_ms = wait_for(lambda: self.query(model_q), self.s.steady_state_timeout_s,
                                      "steady-state model p95 in Prometheus (Ray)")
        except StackError as e:
            raise StackError(f"{e}; {ray_scrape_state(self.prometheus_url)}") from None
        # Ray's replicas report their health gauge only every few seconds (seen here: 1-2 samples in 6 s with a
        # 1 s report interval and a 1 s scrape), so a gauge is read over the rate window
        g = f"{max(self.s.rate_window_s, 3 * self.s.ray_metrics_report_interval_ms / 1000.0):g}s"
        self.queries = promql_map({"w": w, "g": g, "mount": str(self.cache_mount), "base_p95_s": f"{b.promql_p95_s:.6g}",
                                   "base_rps": f"{b.rps:.6g}", "base_model_p95_ms": f"{b.model_p95_ms:.6g}",
                                   "slo_factor": f"{self.sim.slo_latency_factor:g}", "replicas": b.replicas})
        rules = self.run_dir / "monitoring" / "rules.yml"
        rules.write_text(yaml.safe_dump(alert_rules(self.queries, self.s.alert_for_s), sort_keys=False))
        with httpx.Client(trust_env=False, timeout=10) as c:
            r = c.post(self.prometheus_url + "/-/reload")
        if r.status_code != 200:
            raise StackError(f"Prometheus reload answered {r.status_code}: {r.text[:300]}")

        def loaded():
            with httpx.Client(trust_env=False, timeout=10) as c:
                groups = c.get(self.prometheus_url + "/api/v1/rules").json()["data"]["groups"]
            return groups and all(rule.get("health") == "ok" or rule.get("health") == "unknown"
                                  for g in groups for rule in g["rules"])
        wait_for(loaded, 30, f"alert rules loaded ({rules})")

    def alertmanager_cmd(self, cmd: list[str]) -> list[str]:
        """Debian's Alertmanager reads its templates from the fixed path /usr/share/prometheus/alertmanager: run it
        in a private mount namespace whose /usr/share is an overlay of the system's and the cache's (nothing
        changes outside that namespace); ``unshare -r`` (a user namespace) where this is not root."""
        share = Path(self.s.cache_dir).resolve() / "root" / "usr" / "share"
        if Path("/usr/share/prometheus/alertmanager/default.tmpl").is_file():
            return cmd  # installed by apt: nothing to do
        inner = (f"mount -t overlay overlay -o lowerdir={shlex.quote(str(share))}:/usr/share /usr/share && exec "
                 + " ".join(shlex.quote(c) for c in cmd))
        flags = ["-m", "--propagation", "private"] if os.geteuid() == 0 else ["-r", "-m"]
        return ["unshare", *flags, "sh", "-c", inner]

    def targets_up(self) -> int:
        with httpx.Client(trust_env=False, timeout=5) as c:
            r = c.get(self.prometheus_url + "/api/v1/targets").json()
        return sum(1 for t in r["data"]["activeTargets"] if t["health"] == "up")

    # -------------------------------------------------------------- health / stop
    def health(self) -> dict[str, bool]:
        """Every supervised process alive, the load generator sending (without it every window is empty: 0 requests,
        never green), plus the service answering through nginx."""
        out = {p.name: p.alive() for p in self.procs}
        if self.load is not None:
            out["load"] = self.load.running() and not self.load.expired()
        try:
            out["entry"] = http_ok(self.entry_url + "?id=1", 5)
        except httpx.HTTPError:
            out["entry"] = False
        return out

    def stop(self) -> dict:
        """Stop everything (reverse order), unmount the tmpfs, remove the run folder; returns what was left."""
        report: dict[str, Any] = {}
        if self.load is not None:
            with contextlib.suppress(TimeoutError):
                self.load.stop()
            self.load = None
        for p in reversed(self.procs):
            report[p.name] = p.stop(self.s.stop_timeout_s)
        self.procs = []
        if self.sidecar is not None:
            self.sidecar.stop()
        if self.run_dir is not None:
            left: list[int] = []
            for _ in range(int(self.s.stop_timeout_s / 0.5) + 1):  # Ray's workers end once their raylet is gone
                left = stack_pids(self.run_dir)
                if not left:
                    break
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM if _ == 0 else signal.SIGKILL)
                time.sleep(0.5)
            report["leftover_killed"] = left
            if self.mounted:
                for _ in range(20):
                    if subprocess.run(["umount", str(self.cache_mount)], capture_output=True,
                                      timeout=10).returncode == 0:
                        self.mounted = False
                        break
                    time.sleep(0.5)
            if self.own_run_dir and not self.mounted:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            report["mounted_after"] = self.mounted
        return report

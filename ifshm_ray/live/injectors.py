"""Fault injectors for the live stack, in the Chaos Toolkit's shape: steady state, method, rollback.

Each injector declares how to check the steady state (:meth:`Injector.steady_state`), how to break it
(:meth:`Injector.inject`) and how to undo it (:meth:`Injector.undo`, idempotent). :func:`experiment` runs one as a
context manager: it refuses to inject when the steady state does not hold, and the undo runs on the way out
whatever happens inside (an exception, a timeout, a KeyboardInterrupt); its record says what was done and when.

A fault is data (:class:`FaultPlan`: kind, size, timing, the expected answer), built into an injector by
:func:`build_injector`. Implemented kinds:

* ``proxy``: latency, connection resets or an HTTP error rate on the fault proxy's path
  (:mod:`ifshm_ray.live.proxy`), held until undone (the proxy also clears it after ``hold_s``);
* ``transient`` (the negative control): a short proxy fault that clears itself after ``hold_s``; the right answer
  is to do nothing;
* ``disk_fill``: a ballast file of a bounded size in a folder (the model-cache volume's prunable folder, on a
  dedicated small volume), removed by the undo;
* ``serve_config``: a bad config push or bad model deploy: keys merged into a Serve deployment's ``user_config``
  through the dashboard's Serve API, undone by putting back the config that ran before;
* ``process_stop``: a hung replica: SIGSTOP on one process whose command line matches, SIGCONT in the undo and
  from a watchdog after ``hold_s``;
* ``surge``: a traffic surge: the load generator's rate multiplied (:mod:`ifshm_ray.live.loadgen`);
* ``redis_maxmemory``: Redis ``maxmemory`` set too small (``CONFIG SET``; with ``noeviction`` writes then fail with
  ``OOM command not allowed``), the undo sets back the value it had.

Example::

    control = ProxyControl("http://127.0.0.1:18081")
    with experiment(build_injector(plan, proxy=control, healthy=probe_ok)) as run:
        ...  # wait for the alert, let the healer act, measure
    run["undone_at"]  # always set
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

import httpx
from pydantic import Field, model_validator

from ifshm_ray.config import ConfigError, ConfigModel, read_yaml
from ifshm_ray.live.binding import Binding
from ifshm_ray.live.config import InjectorConfig
from ifshm_ray.live.loadgen import LoadGenerator
from ifshm_ray.live.net import check_loopback_url
from ifshm_ray.live.proxy import FaultSpec
from ifshm_ray.live.serve_api import ServeDashboard, record_deploy, with_deployment
from ifshm_ray.sim.actions import CATEGORIES

log = logging.getLogger(__name__)

HealthCheck = Callable[[], bool]


class SteadyStateError(RuntimeError):
    """The steady state does not hold before injecting: the experiment is not run."""


class Injector(Protocol):
    """What every injector provides."""

    name: str

    def steady_state(self) -> tuple[bool, str]:
        """``(holds, detail)``: whether the system is in its steady state now."""

    def inject(self) -> dict:
        """Break it; returns what was done (JSON-able)."""

    def undo(self) -> dict:
        """Put it back (idempotent: safe to call when nothing, or only part, was injected)."""


@contextlib.contextmanager
def experiment(injector: Injector, *, check_steady_state: bool = True,
               wall: Callable[[], float] = time.time) -> Iterator[dict]:
    """Steady-state check, inject, yield the run record, and always undo (see the module docstring)."""
    run: dict[str, Any] = {"injector": injector.name, "started_at": wall()}
    if check_steady_state:
        holds, detail = injector.steady_state()
        run["steady_state_before"] = {"holds": holds, "detail": detail}
        if not holds:
            raise SteadyStateError(f"{injector.name}: the steady state does not hold before injecting: {detail}")
    try:
        run["injected"] = injector.inject()
        run["injected_at"] = wall()
        yield run
    finally:
        try:
            run["undone"] = injector.undo()
        finally:
            run["undone_at"] = wall()
            log.info("%s: undone", injector.name)


# ------------------------------------------------------------------------------------------------ fault plans
class FaultPlan(ConfigModel):
    """One fault, as data: what breaks, how much, for how long, and the answer expected of a healer."""

    name: str
    """Unique name of this fault in the plan file."""
    kind: Literal["proxy", "transient", "disk_fill", "serve_config", "process_stop", "surge", "redis_maxmemory"]
    """Which injector carries it out (see the module docstring)."""
    proxy: FaultSpec | None = None
    """The proxy faults (``proxy`` and ``transient`` only); its ``duration_s`` is set from ``hold_s``."""
    hold_s: float = Field(60.0, gt=0.0)
    """How long the fault is held at most: a ``transient`` clears itself after it. The others are undone by
    :func:`experiment`; a backstop ends them at this time even without it for ``proxy`` (the proxy's own timer) and
    ``process_stop`` (a watchdog process); ``disk_fill``, ``serve_config`` and ``surge`` rely on the undo."""
    size_bytes: int | None = Field(None, ge=1)
    """Ballast size (``disk_fill`` only)."""
    entity: str | None = None
    """The simulator entity whose live Serve deployment gets the config (``serve_config`` only)."""
    user_config: dict[str, Any] | None = None
    """Keys merged into the deployment's ``user_config`` (``serve_config`` only)."""
    surge_factor: float | None = Field(None, gt=1.0)
    """The load generator's rate is multiplied by this (``surge`` only; never above its ``max_rate_rps``)."""
    maxmemory_bytes: int | None = Field(None, ge=1)
    """Redis ``maxmemory`` while the fault holds (``redis_maxmemory`` only)."""
    process_match: str | None = None
    """Regular expression the stopped process's command line must match (``process_stop`` only), e.g. the Serve
    replica's actor name; a process that does not match is never signalled."""
    expected: str = ""
    """The action category a healer should take (``observe`` for the negative control), for reports."""

    @model_validator(mode="after")
    def _fields_for_kind(self) -> "FaultPlan":
        fields = {"proxy": self.proxy, "size_bytes": self.size_bytes, "entity": self.entity,
                  "user_config": self.user_config, "process_match": self.process_match,
                  "surge_factor": self.surge_factor, "maxmemory_bytes": self.maxmemory_bytes}
        needed = {"proxy": ["proxy"], "transient": ["proxy"], "disk_fill": ["size_bytes"],
                  "serve_config": ["entity", "user_config"], "process_stop": ["process_match"],
                  "surge": ["surge_factor"], "redis_maxmemory": ["maxmemory_bytes"]}[self.kind]
        missing = [k for k in needed if not fields[k]]
        extra = [k for k, v in fields.items() if v is not None and k not in needed]
        if missing or extra:
            raise ValueError(f"a {self.kind} fault needs {needed}" + (f"; missing: {missing}" if missing else "")
                             + (f"; not for this kind: {extra}" if extra else ""))
        if self.expected and self.expected not in CATEGORIES:
            raise ValueError(f"expected = {self.expected!r} is not an action category; one of {list(CATEGORIES)}")
        if self.proxy is not None and not self.proxy.active():
            raise ValueError(f"a {self.kind} fault's 'proxy' needs a latency_ms, reset_prob or error_rate")
        return self


# ------------------------------------------------------------------------------------------------ proxy faults
class ProxyControl:
    """Client of the fault proxy's control API (127.0.0.1 only)."""

    def __init__(self, base_url: str, timeout_s: float):
        self.base_url = check_loopback_url(base_url, "fault proxy control")
        self.timeout_s = timeout_s

    def _call(self, method: str, body: dict | None = None) -> dict:
        with httpx.Client(trust_env=False, timeout=self.timeout_s) as c:
            r = c.request(method, self.base_url + "/faults", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"fault proxy {method} /faults answered {r.status_code}: {r.text}")
        return r.json()

    def get(self) -> FaultSpec:
        return FaultSpec.from_dict(self._call("GET"), source="fault proxy")

    def set(self, spec: FaultSpec) -> dict:
        return self._call("PUT", spec.model_dump())

    def clear(self) -> dict:
        return self._call("DELETE")


class ProxyFaultInjector:
    """Latency, resets or an HTTP error rate on the proxy's path, until undone (backstop: ``hold_s``)."""

    def __init__(self, name: str, control: ProxyControl, faults: FaultSpec, hold_s: float,
                 healthy: HealthCheck | None = None):
        self.name = name
        self.control = control
        self.faults = faults.model_copy(update={"duration_s": hold_s})
        self.healthy = healthy

    def steady_state(self) -> tuple[bool, str]:
        try:
            current = self.control.get()
        except (httpx.HTTPError, RuntimeError) as e:
            return False, f"fault proxy control unreachable: {e!r}"
        if current.active():
            return False, f"a proxy fault is already active: {current.model_dump()}"
        if self.healthy is not None and not self.healthy():
            return False, "the service's health check failed"
        return True, "no proxy fault active" + ("; service healthy" if self.healthy is not None else "")

    def inject(self) -> dict:
        return self.control.set(self.faults)

    def undo(self) -> dict:
        return self.control.clear()


class TransientInjector(ProxyFaultInjector):
    """The negative control: a short proxy fault that clears itself after ``hold_s`` (no action is the right
    answer); the undo clears it too, in case the run ends first."""

    def resolved(self) -> bool:
        """True once the proxy reports the fault gone by itself."""
        return not self.control.get().active()


# ------------------------------------------------------------------------------------------------ disk fill
class DiskFillInjector:
    """A ballast file of up to ``size_bytes`` in ``folder`` (the prunable part of the model-cache volume), written
    until that size or until the volume is full; the undo removes it. Refuses a volume larger than
    ``max_volume_bytes``: only a dedicated small volume is filled, never the machine's own disk."""

    BALLAST = "ifshm-ballast.bin"

    def __init__(self, name: str, folder: str | Path, size_bytes: int, max_volume_bytes: int, chunk_bytes: int):
        self.name = name
        self.folder = Path(folder)
        self.size_bytes = size_bytes
        self.max_volume_bytes = max_volume_bytes
        self.chunk_bytes = chunk_bytes

    @property
    def path(self) -> Path:
        return self.folder / self.BALLAST

    def steady_state(self) -> tuple[bool, str]:
        if not self.folder.is_dir():
            return False, f"{self.folder} is not a folder"
        if self.path.exists():
            return False, f"a ballast file is already there: {self.path}"
        total, free = _volume_bytes(self.folder)
        if total > self.max_volume_bytes:
            return False, (f"the volume of {self.folder} holds {total} bytes, more than max_fill_volume_bytes = "
                           f"{self.max_volume_bytes}: fill only a dedicated small volume")
        return True, f"{free} of {total} bytes free"

    def inject(self) -> dict:
        written = 0
        block = b"\0" * self.chunk_bytes
        try:
            with open(self.path, "wb") as f:
                while written < self.size_bytes:
                    n = min(self.chunk_bytes, self.size_bytes - written)
                    f.write(block[:n])
                    written += n
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # the volume filled before the size: that is the fault; keep what was written
            log.info("%s: volume full after %d bytes (%r)", self.name, written, e)
        return {"path": str(self.path), "bytes": written, "free_after": _volume_bytes(self.folder)[1]}

    def undo(self) -> dict:
        existed = self.path.exists()
        self.path.unlink(missing_ok=True)
        return {"removed": str(self.path) if existed else None, "free_after": _volume_bytes(self.folder)[1]}


def _volume_bytes(folder: Path) -> tuple[int, int]:
    """(total, free) bytes of the volume holding ``folder``."""
    st = os.statvfs(folder)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


# ------------------------------------------------------------------------------------------------ Serve config
class ServeConfigInjector:
    """A bad config push or a bad model deploy: keys merged into a Serve deployment's ``user_config`` and PUT
    through the dashboard like any deploy (recorded in the deploy history, so a rollback finds the config before
    it); the undo PUTs the application config that ran before (nothing when it already runs again)."""

    def __init__(self, name: str, dashboard: ServeDashboard, app: str, deployment: str,
                 user_config: dict[str, Any], *, history_path: str | Path | None = None,
                 healthy: HealthCheck | None = None):
        self.name, self.dashboard, self.app, self.deployment = name, dashboard, app, deployment
        self.user_config, self.history_path, self.healthy = dict(user_config), history_path, healthy
        self._before: dict | None = None

    def steady_state(self) -> tuple[bool, str]:
        try:
            details = self.dashboard.details()
        except (httpx.HTTPError, ValueError) as e:
            return False, f"Ray dashboard unreachable: {e!r}"
        problem = self.dashboard.problem(details, self.app, self.deployment)
        if problem:
            return False, problem
        app = details["applications"][self.app]
        dep_status = app["deployments"][self.deployment].get("status")
        if app.get("status") != "RUNNING" or dep_status != "HEALTHY":
            return False, f"application {self.app!r} is {app.get('status')}, deployment {dep_status}"
        if self.healthy is not None and not self.healthy():
            return False, "the service's health check failed"
        return True, f"application {self.app!r} RUNNING, deployment {self.deployment!r} HEALTHY"

    def _deploy(self, details: dict, app_config: dict) -> dict:
        reply = self.dashboard.put(self.dashboard.body(details, self.app, app_config))
        if self.history_path is not None:
            record_deploy(self.history_path, app_config)
        return reply

    def inject(self) -> dict:
        details = self.dashboard.details()
        app = details["applications"][self.app]
        self._before = app["deployed_app_config"]  # set first: the undo restores it even if the PUT half-failed
        running = (app["deployments"][self.deployment].get("deployment_config") or {}).get("user_config") or {}
        merged = {**running, **self.user_config}
        new = with_deployment(self._before, self.deployment, user_config=merged)
        return {"put": self._deploy(details, new), "user_config": merged}

    def undo(self) -> dict:
        if self._before is None:
            return {"restored": None}
        details = self.dashboard.details()
        if details.get("applications", {}).get(self.app, {}).get("deployed_app_config") == self._before:
            reply: dict[str, Any] = {"already_running": True}
        else:
            reply = self._deploy(details, self._before)
        self._before = None
        return {"restored": reply}


# ------------------------------------------------------------------------------------------------ hung process
_STOP_WAIT_TURNS, _STOP_WAIT_S = 200, 0.01  # wait at most 2 s for a stop / continue to show in /proc


def _wait_stopped(pid: int, stopped: bool) -> None:
    """Signals are delivered asynchronously: wait (bounded) until ``/proc`` shows the process (not) stopped."""
    for _ in range(_STOP_WAIT_TURNS):
        state = process_state(pid)
        if state is None or (state == "T") == stopped:
            return
        time.sleep(_STOP_WAIT_S)


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def process_state(pid: int) -> str | None:
    """The process's state letter from ``/proc`` (``T``: stopped), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


class ProcessStopInjector:
    """A hung replica: SIGSTOP on one process (found by ``find_pid``, checked against ``pattern``), SIGCONT in the
    undo. A watchdog process started with it sends SIGCONT after ``hold_s`` even if this process dies first; the
    undo ends the watchdog."""

    def __init__(self, name: str, find_pid: Callable[[], int | None], pattern: str, hold_s: float,
                 healthy: HealthCheck | None = None):
        self.name, self.find_pid, self.pattern, self.hold_s, self.healthy = name, find_pid, pattern, hold_s, healthy
        self.pid: int | None = None
        self._watchdog: subprocess.Popen | None = None

    def _check(self, pid: int | None) -> str | None:
        if pid is None:
            return "no process found"
        if pid in (1, os.getpid(), os.getppid()):
            return f"pid {pid} is init or this process or its parent: never stopped"
        if process_state(pid) is None:
            return f"pid {pid} does not exist"
        cmd = _cmdline(pid)
        if not re.search(self.pattern, cmd):
            return f"pid {pid}'s command line {cmd[:200]!r} does not match {self.pattern!r}"
        return None

    def steady_state(self) -> tuple[bool, str]:
        pid = self.find_pid()
        problem = self._check(pid)
        if problem:
            return False, problem
        if process_state(pid) == "T":
            return False, f"pid {pid} is already stopped"
        if self.healthy is not None and not self.healthy():
            return False, "the service's health check failed"
        return True, f"pid {pid} running"

    def inject(self) -> dict:
        pid = self.find_pid()
        problem = self._check(pid)
        if problem:
            raise RuntimeError(f"{self.name}: {problem}")
        self.pid = pid
        self._watchdog = subprocess.Popen(["sh", "-c", f"sleep {self.hold_s}; kill -CONT {pid}"],
                                          start_new_session=True, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.kill(pid, signal.SIGSTOP)
        _wait_stopped(pid, True)
        return {"pid": pid, "signal": "SIGSTOP", "state": process_state(pid), "watchdog_pid": self._watchdog.pid,
                "cont_after_s": self.hold_s}

    def undo(self) -> dict:
        out: dict[str, Any] = {"pid": self.pid}
        if self.pid is not None and process_state(self.pid) is not None:
            os.kill(self.pid, signal.SIGCONT)
            _wait_stopped(self.pid, False)
            out["signal"] = "SIGCONT"
        if self._watchdog is not None:
            if self._watchdog.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._watchdog.pid, signal.SIGKILL)
            self._watchdog.wait(timeout=5)
            self._watchdog = None
        self.pid = None
        return out


# ------------------------------------------------------------------------------------------------ Redis maxmemory
class RedisMaxmemoryInjector:
    """Redis ``maxmemory`` set to ``maxmemory_bytes`` (too small: writes are refused with OOM under
    ``noeviction``); the undo puts back the value read before."""

    def __init__(self, name: str, port: int, maxmemory_bytes: int, timeout_s: float,
                 healthy: HealthCheck | None = None):
        self.name, self.port, self.maxmemory_bytes, self.timeout_s = name, port, maxmemory_bytes, timeout_s
        self.healthy = healthy
        self._before: int | None = None

    def _cmd(self, *args: str | int):
        from ifshm_ray.live.handlers import redis_command  # handlers imports this module's neighbours only
        return redis_command(self.port, *args, timeout_s=self.timeout_s)

    def steady_state(self) -> tuple[bool, str]:
        try:
            current = int(self._cmd("CONFIG", "GET", "maxmemory")[1])
        except OSError as e:
            return False, f"Redis unreachable: {e!r}"
        if current == self.maxmemory_bytes:
            return False, f"maxmemory is already {current}"
        if self.healthy is not None and not self.healthy():
            return False, "the service's health check failed"
        return True, f"maxmemory {current}"

    def inject(self) -> dict:
        self._before = int(self._cmd("CONFIG", "GET", "maxmemory")[1])
        self._cmd("CONFIG", "SET", "maxmemory", self.maxmemory_bytes)
        return {"maxmemory_before": self._before, "maxmemory": self.maxmemory_bytes}

    def undo(self) -> dict:
        if self._before is None:
            return {"restored": None}
        self._cmd("CONFIG", "SET", "maxmemory", self._before)
        out = {"restored": self._before}
        self._before = None
        return out


# ------------------------------------------------------------------------------------------------ traffic surge
class SurgeInjector:
    """A traffic surge: the load generator's rate x ``factor`` (within its ``max_rate_rps``); the undo restores the
    rate it had before."""

    def __init__(self, name: str, load: LoadGenerator, factor: float, healthy: HealthCheck | None = None):
        self.name, self.load, self.factor, self.healthy = name, load, factor, healthy
        self._base: float | None = None

    def steady_state(self) -> tuple[bool, str]:
        if not self.load.running():
            return False, "the load generator is not running"
        target = self.load.rate_rps * self.factor
        if target > self.load.cfg.max_rate_rps:
            return False, (f"{self.load.rate_rps} rps x {self.factor} = {target} is above max_rate_rps = "
                           f"{self.load.cfg.max_rate_rps}")
        if self.healthy is not None and not self.healthy():
            return False, "the service's health check failed"
        return True, f"load at {self.load.rate_rps} rps"

    def inject(self) -> dict:
        self._base = self.load.rate_rps
        self.load.set_rate(self._base * self.factor)
        return {"rate_rps": self.load.rate_rps, "before_rps": self._base}

    def undo(self) -> dict:
        if self._base is not None:
            self.load.set_rate(self._base)
            self._base = None
        return {"rate_rps": self.load.rate_rps}


# ------------------------------------------------------------------------------------------------ build
def build_injector(plan: FaultPlan, cfg: InjectorConfig, *, proxy: ProxyControl | None = None,
                   healthy: HealthCheck | None = None, fill_folder: str | Path | None = None,
                   dashboard: ServeDashboard | None = None, binding: Binding | None = None,
                   history_path: str | Path | None = None, find_pid: Callable[[], int | None] | None = None,
                   load: LoadGenerator | None = None, redis_port: int | None = None) -> Injector:
    """The injector that carries out ``plan``; raises :class:`ConfigError` when what it needs is not given."""
    if plan.kind in ("proxy", "transient"):
        if proxy is None:
            raise ConfigError(f"fault {plan.name!r} (kind {plan.kind}) needs the fault proxy's control client")
        cls = TransientInjector if plan.kind == "transient" else ProxyFaultInjector
        return cls(plan.name, proxy, plan.proxy, plan.hold_s, healthy)
    if plan.kind == "redis_maxmemory":
        if redis_port is None:
            raise ConfigError(f"fault {plan.name!r} (kind redis_maxmemory) needs the Redis port")
        return RedisMaxmemoryInjector(plan.name, redis_port, plan.maxmemory_bytes, cfg.control_timeout_s, healthy)
    if plan.kind == "surge":
        if load is None:
            raise ConfigError(f"fault {plan.name!r} (kind surge) needs the running load generator")
        return SurgeInjector(plan.name, load, plan.surge_factor, healthy)
    if plan.kind == "process_stop":
        if find_pid is None:
            raise ConfigError(f"fault {plan.name!r} (kind process_stop) needs a way to find the process (find_pid)")
        return ProcessStopInjector(plan.name, find_pid, plan.process_match, plan.hold_s, healthy)
    if plan.kind == "serve_config":
        if dashboard is None or binding is None:
            raise ConfigError(f"fault {plan.name!r} (kind serve_config) needs the Ray dashboard and the binding")
        bound = binding.component_for(plan.entity)
        if bound is None or bound[1].kind != "serve_deployment":
            raise ConfigError(f"fault {plan.name!r}: entity {plan.entity!r} is not bound to a Serve deployment "
                              f"(bound: {bound})")
        comp = bound[1]
        return ServeConfigInjector(plan.name, dashboard, comp.app, comp.deployment, plan.user_config,
                                   history_path=history_path, healthy=healthy)
    if fill_folder is None:
        raise ConfigError(f"fault {plan.name!r} (kind disk_fill) needs the folder to fill")
    return DiskFillInjector(plan.name, fill_folder, plan.size_bytes, cfg.max_fill_volume_bytes, cfg.fill_chunk_bytes)


class FaultPlanFile(ConfigModel):
    """A committed file of fault plans (``data/faults.yaml``): every fault's size and timing, frozen before any
    measurement."""

    faults: list[FaultPlan]
    """The faults, in the order an evaluation injects them."""

    @model_validator(mode="after")
    def _unique(self) -> "FaultPlanFile":
        names = [f.name for f in self.faults]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"fault names must be unique; repeated: {dup}")
        return self

    def get(self, name: str) -> FaultPlan:
        for f in self.faults:
            if f.name == name:
                return f
        raise KeyError(f"no fault {name!r}; faults: {[f.name for f in self.faults]}")


DEFAULT_FAULTS = Path(__file__).resolve().parent / "data" / "faults.yaml"


def load_fault_plans(path: str | Path | None = None) -> FaultPlanFile:
    """The fault plan file at ``path`` (None: the committed ``data/faults.yaml``)."""
    p = Path(path) if path is not None else DEFAULT_FAULTS
    return FaultPlanFile.from_dict(read_yaml(p, what="fault plan file"), source=str(p))

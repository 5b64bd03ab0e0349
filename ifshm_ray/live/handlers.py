"""The executor's real handlers: one per allowed action category, each acting on one kind of live component.

Every handler is a plain callable ``handler(request) -> PlannedCall`` (:mod:`ifshm_ray.live.executor`): planning
reads the live state and changes nothing; the plan carries the call's description, ``execute`` and ``undo``.

==============  ==================  =====================================================================
category        component kind      call
==============  ==================  =====================================================================
scale           serve_deployment    dashboard ``PUT /api/serve/applications/`` with ``num_replicas`` changed
rollback        serve_deployment    the same PUT with the application's previous config (deploy history)
restart         serve_deployment    the same PUT with a restart nonce in the deployment's
                                    ``ray_actor_options.runtime_env.env_vars`` (a rolling restart)
reallocate      redis               ``CONFIG SET maxmemory`` (current x ratio, within bounds)
clear_storage   host                empties the component's allow-listed ``prune_folder`` under the run dir
reroute         nginx               rewrites the upstream include file to the next route, then reloads nginx
restart         nginx               config test, then the supervisor stops nginx's master (graceful ``QUIT``,
                                    bounded) and starts it again with the same files; undo writes back the
                                    config files as planned and restarts again
==============  ==================  =====================================================================

A category with handlers for several component kinds (``restart``: Serve deployments and nginx) is one allow-list
entry that dispatches on the bound component's kind (:func:`by_kind`); any other kind is refused.

The PUT declares every application (an application left out of it would be deleted), so the handler sends each
application's ``deployed_app_config`` from the GET and changes only the target's; an application deployed
imperatively (``serve.run``, no ``deployed_app_config``) is a pre-check failure (:mod:`ifshm_ray.live.serve_api`).
Tested against local fakes, and live in ``tests/test_live_e2e.py`` / ``jobs/live_eval.py``.
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ifshm_ray.config import ConfigError
from ifshm_ray.live.config import HandlerConfig
from ifshm_ray.live.executor import ActionRequest, Handler, PlannedCall
from ifshm_ray.live.net import check_loopback_host
from ifshm_ray.live.serve_api import ServeDashboard, read_deploys, with_deployment

RESTART_NONCE_VAR = "IFSHM_RESTART_NONCE"


def _refused(call: dict, *problems: str) -> PlannedCall:
    def never():
        raise RuntimeError("a refused plan is never executed")
    return PlannedCall(call=call, execute=never, problems=list(problems))


def _wrong_kind(req: ActionRequest, kind: str) -> PlannedCall | None:
    if req.binding.kind != kind:
        return _refused({"category": req.category, "component": req.component},
                        f"{req.category} acts on {kind} components; {req.component!r} is {req.binding.kind}")
    return None


# ------------------------------------------------------------------------------------------------ Serve
class ServeAppHandler:
    """scale / rollback / restart of a Serve deployment through the Ray dashboard's declarative Serve API."""

    def __init__(self, dashboard_url: str, cfg: HandlerConfig, history_path: str | Path | None = None):
        self.dashboard = ServeDashboard(dashboard_url, cfg.http_timeout_s)
        self.cfg = cfg
        self.history_path = Path(history_path) if history_path is not None else None

    def _plan(self, req: ActionRequest, change) -> PlannedCall:
        """Common part: read the state, check it, let ``change(details, app_detail) -> (new app config, extra
        plan fields, problems)`` build the new config, and plan the PUT with its undo (the old config)."""
        wrong = _wrong_kind(req, "serve_deployment")
        if wrong is not None:
            return wrong
        app, dep = req.binding.app, req.binding.deployment
        details = self.dashboard.details()
        problem = self.dashboard.problem(details, app, dep)
        if problem:
            return _refused({"app": app, "deployment": dep}, problem)
        apps = details["applications"]
        old = apps[app]["deployed_app_config"]
        new, extra, problems = change(details, apps[app])
        body = self.dashboard.body(details, app, new) if new is not None else None
        call = {"method": "PUT", "url": self.dashboard.url, "app": app, "deployment": dep, "body": body}
        if problems:
            return _refused(call, *problems)
        undo_body = self.dashboard.body(details, app, old)
        return PlannedCall(call=call, execute=lambda: self.dashboard.put(body),
                           undo=lambda: self.dashboard.put(undo_body), **extra)

    def scale(self, req: ActionRequest) -> PlannedCall:
        """Replicas x ``ratio`` (rounded); the executor checks the result against its replica bounds."""
        dep = req.binding.deployment

        def change(details, app_detail):
            dcfg = app_detail["deployments"][dep].get("deployment_config") or {}
            if req.ratio is None:
                return None, {}, ["scale needs a ratio"]
            if dcfg.get("autoscaling_config"):
                return None, {}, [f"deployment {dep!r} autoscales: its replica count is not set by hand"]
            before = int(dcfg.get("num_replicas") or 1)
            after = max(0, round(before * req.ratio))
            new = with_deployment(app_detail["deployed_app_config"], dep, num_replicas=after)
            return new, {"replicas": (before, after)}, []
        return self._plan(req, change)

    def restart(self, req: ActionRequest) -> PlannedCall:
        """A rolling restart of the deployment's replicas: a new nonce in its actor options' environment."""
        dep = req.binding.deployment

        def change(details, app_detail):
            dcfg = app_detail["deployments"][dep].get("deployment_config") or {}
            opts = copy.deepcopy(dcfg.get("ray_actor_options") or {})
            env = opts.setdefault("runtime_env", {}).setdefault("env_vars", {})
            env[RESTART_NONCE_VAR] = f"{time.time():.6f}"
            return with_deployment(app_detail["deployed_app_config"], dep, ray_actor_options=opts), {}, []
        return self._plan(req, change)

    def rollback(self, req: ActionRequest) -> PlannedCall:
        """The application's config deployed before the current one (from the deploy history)."""
        app = req.binding.app

        def change(details, app_detail):
            current = app_detail["deployed_app_config"]
            history = read_deploys(self.history_path, app)
            if not history:
                return None, {}, [f"no deploy history for application {app!r} ({self.history_path})"]
            idx = [i for i, c in enumerate(history) if c == current]
            if not idx:
                return None, {}, ["the running config is not in the deploy history: nothing known to roll back to"]
            earlier = [c for c in history[: idx[-1]] if c != current]
            if not earlier:
                return None, {}, ["the running config is the first one deployed: nothing to roll back to"]
            return earlier[-1], {}, []
        return self._plan(req, change)


# ------------------------------------------------------------------------------------------------ Redis
class RedisError(RuntimeError):
    """Redis answered with an error reply."""


def redis_command(port: int, *args: str | int, host: str = "127.0.0.1", timeout_s: float = 5.0) -> Any:
    """One Redis command over RESP (no client library needed); error replies raise :class:`RedisError`."""
    check_loopback_host(host, "Redis")
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(a), a) for a in (str(x).encode() for x in args))
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(payload)
        with s.makefile("rb") as f:
            return _read_reply(f)


def _read_reply(f) -> Any:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise RedisError(f"truncated reply {line!r}")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RedisError(f"unknown reply type {line!r}")


class RedisMaxmemoryHandler:
    """reallocate on Redis: ``maxmemory`` x ratio, within :class:`HandlerConfig`'s bounds; undo sets it back."""

    def __init__(self, port: int, cfg: HandlerConfig):
        self.port, self.cfg = port, cfg

    def _cmd(self, *args: str | int) -> Any:
        return redis_command(self.port, *args, timeout_s=self.cfg.redis_timeout_s)

    def reallocate(self, req: ActionRequest) -> PlannedCall:
        wrong = _wrong_kind(req, "redis")
        if wrong is not None:
            return wrong
        reply = self._cmd("CONFIG", "GET", "maxmemory")
        before = int(reply[1])
        call = {"redis": f"127.0.0.1:{self.port}", "command": ["CONFIG", "SET", "maxmemory", None], "before": before}
        if req.ratio is None:
            return _refused(call, "reallocate needs a ratio")
        if before == 0:
            return _refused(call, "maxmemory is 0 (no limit): there is nothing to reallocate")
        after = round(before * req.ratio)
        call["command"][3] = after
        lo, hi = self.cfg.min_maxmemory_bytes, self.cfg.max_maxmemory_bytes
        if not lo <= after <= hi:
            return _refused(call, f"maxmemory {before} -> {after} outside [{lo}, {hi}] (min/max_maxmemory_bytes)")
        return PlannedCall(call=call, execute=lambda: self._cmd("CONFIG", "SET", "maxmemory", after),
                           undo=lambda: self._cmd("CONFIG", "SET", "maxmemory", before))


# ------------------------------------------------------------------------------------------------ prune folder
class PruneFolderHandler:
    """clear_storage on a host: removes everything inside its ``prune_folder`` (relative to ``run_dir``), never
    anything outside it (symlinks are removed, not followed). Not reversible: the plan has no undo."""

    def __init__(self, run_dir: str | Path, cfg: HandlerConfig):
        self.run_dir, self.cfg = Path(run_dir).resolve(), cfg

    def clear_storage(self, req: ActionRequest) -> PlannedCall:
        wrong = _wrong_kind(req, "host")
        if wrong is not None:
            return wrong
        if not req.binding.prune_folder:
            return _refused({"component": req.component}, f"{req.component!r} has no prune_folder in the binding")
        folder = self.run_dir / req.binding.prune_folder
        call: dict[str, Any] = {"clear": str(folder)}
        if folder.is_symlink() or not folder.is_dir():
            return _refused(call, f"{folder} is not a plain folder")
        if not folder.resolve().is_relative_to(self.run_dir):
            return _refused(call, f"{folder} resolves outside the run dir {self.run_dir}")
        entries = []
        for i, e in enumerate(folder.iterdir()):
            if i >= self.cfg.max_prune_entries:
                return _refused(call, f"{folder} holds more than max_prune_entries = {self.cfg.max_prune_entries}")
            entries.append(e)
        call["entries"] = len(entries)

        def execute() -> dict:
            freed = 0
            for e in entries:
                if e.is_symlink() or not e.is_dir():
                    with contextlib.suppress(FileNotFoundError):
                        freed += e.lstat().st_size
                        e.unlink()
                else:
                    freed += sum(p.stat().st_size for p in e.rglob("*") if p.is_file() and not p.is_symlink())
                    shutil.rmtree(e)
            return {"removed": len(entries), "bytes": freed}
        return PlannedCall(call=call, execute=execute, undo=None)


# ------------------------------------------------------------------------------------------------ nginx
_SERVER_RE = re.compile(r"^\s*server\s+([^;\s]+)\s*;", re.M)


def render_upstream(name: str, address: str) -> str:
    """The upstream include file nginx loads: one upstream block with one server."""
    return f"upstream {name} {{\n    server {address};\n}}\n"


class NginxUpstreamHandler:
    """reroute on nginx: switch its upstream include file to the next route, test the config, reload."""

    def __init__(self, upstream_file: str | Path, routes: Mapping[str, str], reload_cmd: Sequence[str],
                 cfg: HandlerConfig, *, upstream_name: str = "serve", test_cmd: Sequence[str] | None = None):
        if len(routes) < 2:
            raise ConfigError(f"reroute needs at least two routes, got {dict(routes)}")
        for route, addr in routes.items():
            host, _, port = addr.rpartition(":")
            check_loopback_host(host, f"route {route!r}")
            if not port.isdigit():
                raise ConfigError(f"route {route!r} = {addr!r} must be 127.0.0.1:PORT")
        self.file, self.routes, self.cfg = Path(upstream_file), dict(routes), cfg
        self.reload_cmd, self.test_cmd, self.upstream_name = list(reload_cmd), test_cmd, upstream_name

    def _run(self, cmd: Sequence[str]) -> dict:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=self.cfg.reload_timeout_s)
        reply = {"cmd": list(cmd), "rc": p.returncode, "stderr": p.stderr[-1000:]}
        if p.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {p.stderr.strip()[-300:]}")
        return reply

    def _switch(self, text: str) -> dict:
        tmp = self.file.with_suffix(self.file.suffix + ".tmp")
        old = self.file.read_text()
        tmp.write_text(text)
        os.replace(tmp, self.file)
        replies = []
        try:
            if self.test_cmd:
                replies.append(self._run(self.test_cmd))
            replies.append(self._run(self.reload_cmd))
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.file.write_text(old)  # never leave a config nginx did not accept
            raise
        return {"file": str(self.file), "commands": replies}

    def reroute(self, req: ActionRequest) -> PlannedCall:
        wrong = _wrong_kind(req, "nginx")
        if wrong is not None:
            return wrong
        if not self.file.is_file():
            return _refused({"file": str(self.file)}, f"upstream file {self.file} does not exist")
        old = self.file.read_text()
        servers = _SERVER_RE.findall(old)
        names = list(self.routes)
        current = next((r for r, a in self.routes.items() if servers == [a]), None)
        call: dict[str, Any] = {"file": str(self.file), "from": servers}
        if current is None:
            return _refused(call, f"the upstream file's servers {servers} match no route in {self.routes}")
        nxt = names[(names.index(current) + 1) % len(names)]
        call.update(route_from=current, route_to=nxt, reload=self.reload_cmd)
        new = render_upstream(self.upstream_name, self.routes[nxt])
        return PlannedCall(call=call, execute=lambda: self._switch(new), undo=lambda: self._switch(old))


class NginxRestartHandler:
    """restart on nginx: the nginx config is tested (a config nginx would not start with refuses the action), then
    ``restart()`` (the stack's supervisor: graceful stop of the master, bounded, then a fresh start with the same
    files, waiting until it answers) is called. A restart changes no state of its own; its undo writes back the
    config files as they were when the action was planned (when something changed them since) and restarts
    again, so the undo always ends in the configuration that ran before the action."""

    def __init__(self, restart: Callable[[], Any], config_files: Sequence[str | Path], cfg: HandlerConfig, *,
                 test_cmd: Sequence[str] | None = None):
        if not config_files:
            raise ConfigError("the nginx restart handler needs the config files it snapshots (nginx.conf, ...)")
        self._restart, self.files, self.cfg = restart, [Path(f) for f in config_files], cfg
        self.test_cmd = list(test_cmd) if test_cmd else None

    def _test(self) -> dict | None:
        if not self.test_cmd:
            return None
        p = subprocess.run(self.test_cmd, capture_output=True, text=True, timeout=self.cfg.reload_timeout_s)
        if p.returncode != 0:
            raise RuntimeError(f"{self.test_cmd[0]} exited {p.returncode}: {p.stderr.strip()[-300:]}")
        return {"cmd": self.test_cmd, "rc": p.returncode}

    def restart(self, req: ActionRequest) -> PlannedCall:
        wrong = _wrong_kind(req, "nginx")
        if wrong is not None:
            return wrong
        call: dict[str, Any] = {"restart": req.component, "files": [str(f) for f in self.files],
                                "test": self.test_cmd}
        missing = [str(f) for f in self.files if not f.is_file()]
        if missing:
            return _refused(call, f"nginx config files missing: {missing}")
        snapshot = {f: f.read_text() for f in self.files}
        try:
            self._test()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            return _refused(call, f"the nginx config test failed, a restart would not come back: {e}")

        def execute() -> dict:
            return {"test": self._test(), "restart": self._restart()}

        def undo() -> dict:
            changed = [f for f, text in snapshot.items() if f.read_text() != text]
            for f in changed:
                tmp = f.with_suffix(f.suffix + ".tmp")
                tmp.write_text(snapshot[f])
                os.replace(tmp, f)
            return {"restored": [str(f) for f in changed], "test": self._test(), "restart": self._restart()}
        return PlannedCall(call=call, execute=execute, undo=undo)


def by_kind(category: str, handlers: Mapping[str, Handler]) -> Handler:
    """One allow-list entry for ``category`` that hands each request to the handler of its component's kind
    (``{kind: handler}``); a component of another kind is refused with the kinds it would accept."""
    table = dict(handlers)

    def dispatch(req: ActionRequest) -> PlannedCall:
        h = table.get(req.binding.kind)
        if h is None:
            return _refused({"category": category, "component": req.component},
                            f"{category} acts on {sorted(table)} components; {req.component!r} is "
                            f"{req.binding.kind}")
        return h(req)
    dispatch.kinds = tuple(sorted(table))  # type: ignore[attr-defined]  (for reports and tests)
    return dispatch


def build_handlers(*, serve: ServeAppHandler | None = None, redis: RedisMaxmemoryHandler | None = None,
                   prune: PruneFolderHandler | None = None, nginx: NginxUpstreamHandler | None = None,
                   nginx_restart: NginxRestartHandler | None = None) -> dict[str, Handler]:
    """The executor's allow-list: category -> its one handler, for the handlers given (a category served for
    several component kinds dispatches on the kind: :func:`by_kind`)."""
    per_kind: dict[str, dict[str, Handler]] = {}
    if serve is not None:
        for cat, h in (("scale", serve.scale), ("rollback", serve.rollback), ("restart", serve.restart)):
            per_kind.setdefault(cat, {})["serve_deployment"] = h
    if redis is not None:
        per_kind.setdefault("reallocate", {})["redis"] = redis.reallocate
    if prune is not None:
        per_kind.setdefault("clear_storage", {})["host"] = prune.clear_storage
    if nginx is not None:
        per_kind.setdefault("reroute", {})["nginx"] = nginx.reroute
    if nginx_restart is not None:
        per_kind.setdefault("restart", {})["nginx"] = nginx_restart.restart
    return {cat: next(iter(hs.values())) if len(hs) == 1 else by_kind(cat, hs) for cat, hs in per_kind.items()}

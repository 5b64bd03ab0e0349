"""The Ray dashboard's declarative Serve API, as the executor's handlers and the config injectors use it.

``GET /api/serve/applications/`` returns every application's details (status, ``deployed_app_config``, the
deployments with their ``deployment_config``); ``PUT`` takes the whole declarative config: an application left out
of it is deleted. :meth:`ServeDashboard.body` therefore sends every application's ``deployed_app_config`` and
replaces only one. A deploy history (JSONL, one application config per line) records what was deployed, so a
rollback knows the config before the running one.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Mapping

import httpx

from ifshm_ray.live.net import check_loopback_url

SERVE_API = "/api/serve/applications/"


def record_deploy(history_path: str | Path, app_config: Mapping[str, Any]) -> None:
    """Append an application config (as deployed) to the deploy history that ``rollback`` reads."""
    p = Path(history_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps({"app": app_config["name"], "config": app_config, "at": time.time()},
                           sort_keys=True) + "\n")


def read_deploys(history_path: str | Path | None, app: str) -> list[dict]:
    """The configs of ``app`` in the deploy history, oldest first ([] when there is no history)."""
    if history_path is None or not Path(history_path).exists():
        return []
    rows = [json.loads(line) for line in Path(history_path).read_text(encoding="utf-8").splitlines() if line]
    return [r["config"] for r in rows if r.get("app") == app]


def with_deployment(app_config: Mapping[str, Any], deployment: str, **fields: Any) -> dict:
    """A copy of an application config whose override entry for ``deployment`` has ``fields`` set."""
    new = copy.deepcopy(dict(app_config))
    deps = new.setdefault("deployments", [])
    entry = next((d for d in deps if d.get("name") == deployment), None)
    if entry is None:
        entry = {"name": deployment}
        deps.append(entry)
    entry.update(fields)
    return new


class ServeDashboard:
    """GET and PUT of the Serve applications on a Ray dashboard at 127.0.0.1."""

    def __init__(self, dashboard_url: str, timeout_s: float):
        self.url = check_loopback_url(dashboard_url, "Ray dashboard") + SERVE_API
        self.timeout_s = timeout_s

    def _client(self) -> httpx.Client:
        return httpx.Client(trust_env=False, timeout=self.timeout_s)

    def details(self) -> dict:
        with self._client() as c:
            r = c.get(self.url)
        r.raise_for_status()
        return r.json()

    def put(self, body: dict) -> dict:
        """PUT the whole declarative config; a non-2xx answer raises with its text."""
        with self._client() as c:
            r = c.put(self.url, json=body)
        if r.status_code >= 300:
            raise RuntimeError(f"PUT {SERVE_API} answered {r.status_code}: {r.text[:500]}")
        return {"status": r.status_code, "text": r.text[:2000]}

    @staticmethod
    def body(details: dict, app: str, app_config: dict) -> dict:
        """The PUT body: every application's deployed config, ``app``'s replaced by ``app_config``."""
        apps = [app_config if name == app else a["deployed_app_config"]
                for name, a in details.get("applications", {}).items()]
        body: dict[str, Any] = {"applications": apps}
        http = details.get("http_options") or {}
        if http.get("host") is not None and http.get("port") is not None:
            body["http_options"] = {"host": http["host"], "port": http["port"]}
        return body

    @staticmethod
    def problem(details: dict, app: str, deployment: str) -> str | None:
        """Why a declarative PUT changing ``app``/``deployment`` cannot be made now (None: it can)."""
        apps = details.get("applications") or {}
        if app not in apps:
            return f"Serve application {app!r} is not running (applications: {sorted(apps)})"
        imperative = sorted(n for n, a in apps.items() if not a.get("deployed_app_config"))
        if imperative:
            return (f"applications {imperative} were not deployed from a config: the declarative PUT would "
                    "replace them")
        if deployment not in (apps[app].get("deployments") or {}):
            return f"deployment {deployment!r} is not in application {app!r}"
        return None

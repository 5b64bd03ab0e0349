"""Live healing: the healer acting on a real service on this machine (issue 13).

Modules (each imported on its own; this package re-exports nothing; only ``target_app`` imports Ray, and it runs
inside the target Ray's workers):

* :mod:`ifshm_ray.live.config`: typed settings (executor limits, handler bounds, fault proxy and injector bounds).
* :mod:`ifshm_ray.live.binding`: simulator entity names -> live components (``data/binding.yaml``).
* :mod:`ifshm_ray.live.executor`: the safe executor (dry-run by default, allow-list, blast-radius limits,
  revert on worse SLOs, JSONL audit log).
* :mod:`ifshm_ray.live.handlers`: the executor's real handlers (Serve config PUT for scale / rollback / restart,
  Redis ``CONFIG SET maxmemory``, clearing an allow-listed prune folder, nginx upstream switch + reload).
* :mod:`ifshm_ray.live.proxy`: an in-repo TCP fault proxy (latency, resets, HTTP errors) with a control API.
* :mod:`ifshm_ray.live.injectors`: fault injectors in the Chaos Toolkit shape (steady state, inject, undo) and
  the fault plans (``data/faults.yaml``).
* :mod:`ifshm_ray.live.loadgen`: a bounded loopback load generator (paced requests, every outcome recorded).
* :mod:`ifshm_ray.live.slo`: the wall-clock SLO probe (success rate, latency quantile, replicas; thresholds from
  ``SimConfig``'s SLO fields), the executor's revert probe and the green-for-N-seconds recovery rule.
* :mod:`ifshm_ray.live.recording`: every incident's telemetry windows with the decisions, to Parquet for replay.
* :mod:`ifshm_ray.live.net`: the loopback-only address checks every piece uses.
* :mod:`ifshm_ray.live.stack`: the target stack and its supervisor (Redis, a Ray head with the Serve target app,
  the fault proxy, nginx, a tmpfs model cache, exporters, Prometheus, Alertmanager; start all, health, stop all).
* :mod:`ifshm_ray.live.target_app`: the Serve application under test (gateway -> model replicas -> Redis).
* :mod:`ifshm_ray.live.collector`: telemetry windows from Prometheus range queries and the real log files
  (``data/promql.yaml``: simulator metric -> PromQL).
* :mod:`ifshm_ray.live.incident`: one measured incident (inject, heal through the executor, recover, restore);
  used by ``jobs/live_eval.py``.
"""

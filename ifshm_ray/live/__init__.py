"""Live healing: the healer acting on a real service on this machine (being built; see issue 13).

Modules (each imported on its own; this package re-exports nothing and imports neither torch nor Ray):

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
"""

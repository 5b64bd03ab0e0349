"""Typed settings of the live-healing pieces: every limit of the safe executor and of the fault proxy.

Loadable from YAML with :func:`ifshm_ray.config.load_config` (``--set executor.cooldown_s=30`` style overrides);
every field has a docstring and a bound.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ifshm_ray.config import ConfigModel
from ifshm_ray.eval.config import StatsConfig

ComponentKind = Literal["nginx", "serve_deployment", "redis", "host", "fault_proxy", "ray_gcs", "serve_controller",
                        "prometheus", "alertmanager", "healer"]
"""The kinds of live component a binding file may name (:mod:`ifshm_ray.live.binding`)."""


class ExecutorConfig(ConfigModel):
    """The safe executor's switches and blast-radius limits (:class:`ifshm_ray.live.executor.SafeExecutor`)."""

    execute: bool = False
    """Act for real. False (the default): dry-run, every decision is checked and audited as if it were carried
    out, but no handler's call is made (a dry-run action counts against the cooldown and the per-incident cap like
    a real one, so a dry run rehearses the same decisions)."""
    audit_log: str = "results/live/audit.jsonl"
    """Append-only JSONL audit log: one line per decision (also refused ones), per verification and per revert."""
    cooldown_s: float = Field(60.0, ge=0.0)
    """After an action on a live component, further actions on the same component are refused for this long."""
    max_actions_per_incident: int = Field(3, ge=1)
    """At most this many actions (executed, dry-run or failed) per incident; later ones are refused."""
    min_replicas: int = Field(1, ge=1)
    """A scale action may not leave a deployment with fewer replicas than this."""
    max_replicas: int = Field(4, ge=1)
    """A scale action may not leave a deployment with more replicas than this."""
    deny_kinds: list[ComponentKind] = Field(default_factory=lambda: ["ray_gcs", "serve_controller", "prometheus",
                                                                     "alertmanager", "healer"])
    """Live component kinds never acted on, whatever the healer says (the GCS, the Serve controller, monitoring
    and the healer itself)."""
    deny_components: list[str] = Field(default_factory=list)
    """Live component names never acted on, in addition to ``deny_kinds``."""
    verify_after_s: float = Field(30.0, ge=0.0)
    """The SLO probe is read again this long after an executed action; the action stays in flight until then."""
    revert_margin: float = Field(0.0, ge=0.0)
    """Revert (the handler's undo) when the probe's badness after the action exceeds the one before by more than
    this."""

    @model_validator(mode="after")
    def _bounds(self) -> "ExecutorConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas = {self.min_replicas} must be <= max_replicas = {self.max_replicas}")
        return self


class ProxyConfig(ConfigModel):
    """Bounds of the in-repo fault proxy (:class:`ifshm_ray.live.proxy.FaultProxy`)."""

    max_connections: int = Field(64, ge=1)
    """Connections served at the same time; a connection beyond this is closed at once."""
    max_latency_ms: float = Field(5000.0, ge=0.0)
    """Largest latency a fault may add (a larger value is refused)."""
    max_fault_s: float = Field(300.0, gt=0.0)
    """A fault clears itself this long after it was set (its ``duration_s`` may only be shorter)."""
    connect_timeout_s: float = Field(5.0, gt=0.0)
    """Timeout for connecting to the upstream."""
    idle_timeout_s: float = Field(60.0, gt=0.0)
    """A proxied connection with no bytes in either direction for this long is closed."""
    max_request_head_bytes: int = Field(65536, ge=1024)
    """Most bytes read from a client before answering with an injected HTTP error."""
    seed: int | None = None
    """Seed of the proxy's random draws (resets, error responses); None: fresh entropy."""


class InjectorConfig(ConfigModel):
    """Bounds of the fault injectors (:mod:`ifshm_ray.live.injectors`)."""

    max_fill_volume_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    """A disk-fill fault only runs on a volume no larger than this (a dedicated tmpfs or loop volume), never on
    the machine's own disk; it writes its ballast until ``size_bytes`` or the volume is full."""
    fill_chunk_bytes: int = Field(1024 * 1024, ge=4096)
    """A disk-fill fault writes its ballast in chunks of this size."""
    control_timeout_s: float = Field(5.0, gt=0.0)
    """Timeout of one call to the fault proxy's control API."""


class HandlerConfig(ConfigModel):
    """Timeouts and bounds of the executor's real handlers (:mod:`ifshm_ray.live.handlers`)."""

    http_timeout_s: float = Field(10.0, gt=0.0)
    """Timeout of one call to the Ray dashboard's Serve API."""
    redis_timeout_s: float = Field(5.0, gt=0.0)
    """Timeout of one Redis command."""
    min_maxmemory_bytes: int = Field(16 * 1024 * 1024, ge=1)
    """Reallocating Redis may not set ``maxmemory`` below this."""
    max_maxmemory_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    """Reallocating Redis may not set ``maxmemory`` above this."""
    max_prune_entries: int = Field(10000, ge=1)
    """clear_storage refuses a prune folder with more entries than this (something else is in it)."""
    reload_timeout_s: float = Field(10.0, gt=0.0)
    """Timeout of the nginx reload (and config test) command."""

    @model_validator(mode="after")
    def _bounds(self) -> "HandlerConfig":
        if self.min_maxmemory_bytes > self.max_maxmemory_bytes:
            raise ValueError(f"min_maxmemory_bytes = {self.min_maxmemory_bytes} must be <= max_maxmemory_bytes = "
                             f"{self.max_maxmemory_bytes}")
        return self


class SloProbeConfig(ConfigModel):
    """The wall-clock SLO probe (:mod:`ifshm_ray.live.slo`); its thresholds come from ``SimConfig``'s SLO fields."""

    requests: int = Field(20, ge=1)
    """Requests sent (one after the other) for one reading."""
    request_timeout_s: float = Field(2.0, gt=0.0)
    """A request slower than this counts as failed."""
    latency_quantile: float = Field(0.95, gt=0.0, lt=1.0)
    """The latency quantile compared with the threshold (p95 by default)."""
    green_s: float = Field(5.0, ge=0.0)
    """Recovered: the probe is green (every SLO holds) for this many consecutive seconds."""


class LoadConfig(ConfigModel):
    """The bounded loopback load generator (:class:`ifshm_ray.live.loadgen.LoadGenerator`)."""

    rate_rps: float = Field(5.0, gt=0.0)
    """Requests per second sent in the steady state (open loop: paced, not waiting for answers beyond
    ``concurrency``)."""
    max_rate_rps: float = Field(50.0, gt=0.0)
    """No rate above this is ever set (also not by a traffic surge)."""
    concurrency: int = Field(4, ge=1)
    """Requests in flight at most (one worker thread each)."""
    request_timeout_s: float = Field(5.0, gt=0.0)
    """A request slower than this counts as failed."""
    max_duration_s: float | None = Field(None, gt=0.0)
    """The generator stops by itself after this long; None: the live stack's ``max_lifetime_s`` (the stack's load
    lives as long as its processes; a shorter value ends the measurement mid-run: ``jobs/live_eval.py`` refuses a
    plan longer than it). A generator used on its own needs it set."""
    max_records: int = Field(100_000, ge=1)
    """Most request records kept (the oldest are dropped)."""

    @model_validator(mode="after")
    def _rate_bound(self) -> "LoadConfig":
        if self.rate_rps > self.max_rate_rps:
            raise ValueError(f"rate_rps = {self.rate_rps} must be <= max_rate_rps = {self.max_rate_rps}")
        return self


class StackConfig(ConfigModel):
    """The target stack on this machine (:mod:`ifshm_ray.live.stack`): where its binaries and files are, its sizes,
    its telemetry cadence and how long any of its processes may live."""

    cache_dir: str = ".cache/live"
    """Where ``scripts/install_live.sh`` put the extracted Debian packages (``<cache_dir>/root/usr/bin/...``)."""
    run_dir: str | None = None
    """Folder for the run's generated configs, logs and data; None: a fresh short folder under /tmp (Ray's socket
    paths must stay under 107 characters), removed at teardown."""
    max_lifetime_s: float = Field(900.0, gt=0.0)
    """Every process of the stack is started under ``timeout``: it ends by itself after this long."""
    startup_timeout_s: float = Field(180.0, gt=0.0)
    """Bringing the whole stack up (Ray, the Serve app, nginx, Redis, Prometheus, ...) may take at most this long."""
    stop_timeout_s: float = Field(20.0, gt=0.0)
    """A process that has not exited this long after SIGTERM gets SIGKILL."""
    steady_state_timeout_s: float = Field(120.0, gt=0.0)
    """After start, the steady-state p95s (the probe's, and the model deployment's from Ray's metrics) must reach
    Prometheus within this long. Ray's first metrics export took over 60 s once on the busy 2-core box (the live
    e2e test's stack start then failed; 37-50 s in three other runs)."""
    ray_num_cpus: int = Field(2, ge=1)
    """``ray start --num-cpus`` of the target Ray."""
    ray_metrics_report_interval_ms: int = Field(1000, ge=100)
    """``RAY_metrics_report_interval_ms`` of the target Ray (Ray's default is 10000)."""
    scrape_interval_s: float = Field(1.0, gt=0.0)
    """Prometheus scrape and rule evaluation interval."""
    alert_for_s: float = Field(3.0, ge=0.0)
    """``for:`` of every alert rule (a short one: the stack is small and runs are short)."""
    rate_window_s: float = Field(10.0, gt=0.0)
    """Range of the ``rate()`` / ``increase()`` windows in the alert rules and the collector's PromQL."""
    baseline_attempts: int = Field(3, ge=1)
    """The steady state (every request of one rate window answered within the SLO's error budget) is looked for in
    at most this many consecutive windows after start before the stack gives up."""
    model_service_ms: float = Field(100.0, gt=0.0)
    """The model's fixed accelerator-like wait per request: one request at a time per replica, so a replica serves
    at most 1000 / model_service_ms requests per second and scaling out adds capacity (as on a GPU)."""
    model_replicas: int = Field(2, ge=1)
    """Replicas of the model deployment in the steady state."""
    replica_num_cpus: float = Field(0.1, gt=0.0)
    """``ray_actor_options.num_cpus`` of each replica (a fraction: the work is the wait, not the CPU)."""
    model_versions: list[str] = Field(default_factory=lambda: ["v1", "v2"])
    """Model versions written to the model cache at start (the steady state runs the first); a ``model_version``
    not among them fails the replica's reconfigure (a bad config push)."""
    model_features: int = Field(16, ge=1)
    """Length of the feature vectors in Redis and of the bundled linear model's weights."""
    feature_keys: int = Field(200, ge=1)
    """Feature vectors written to Redis at start (``feat:<i>``)."""
    prediction_ttl_s: int = Field(60, ge=1)
    """The gateway stores each prediction in Redis for this long (``SET pred:<id> ... EX``)."""
    prediction_bytes: int = Field(2048, ge=1)
    """Bytes of each stored prediction record (a Redis ``maxmemory`` too small then refuses writes)."""
    scratch_bytes: int = Field(4096, ge=1)
    """Bytes the model writes to its scratch file in the model cache per request (write + rename: a full volume
    fails it with ENOSPC)."""
    model_cache_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    """Size of the tmpfs mounted as the model cache (needs root; without it the disk-fill fault is skipped)."""
    redis_maxmemory_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    """Redis ``maxmemory`` in the steady state (policy ``noeviction``: writes fail with OOM when it is reached)."""
    webhook_path: str = "/v1/alertmanager"
    """Path Alertmanager posts to (the healer Serve app's route); the stack's own receiver listens on it too, to
    time detection."""
    healer_url: str | None = None
    """Base URL of the healer Serve app (``http://127.0.0.1:PORT``, outside the target Ray); when set, Alertmanager
    also posts every webhook to ``<healer_url><webhook_path>``. None: only the stack's receiver gets them."""
    node_exporter_collectors: list[str] = Field(default_factory=lambda: ["cpu", "meminfo", "filesystem",
                                                                         "loadavg"])
    """node-exporter collectors enabled (all others off, to keep its CPU use small)."""

    @model_validator(mode="after")
    def _check(self) -> "StackConfig":
        if not self.model_versions:
            raise ValueError("model_versions needs at least one version")
        if not self.webhook_path.startswith("/"):
            raise ValueError(f"webhook_path {self.webhook_path!r} must start with '/'")
        return self


class HealerConfig(ConfigModel):
    """The healer of the ``policy`` arm (:mod:`ifshm_ray.live.healer`): the project's HTTP API over a trained
    policy bundle, in its own process on 127.0.0.1, outside the target Ray."""

    checkpoint: str | None = None
    """Policy bundle (``jobs/train.py --out`` or its ``policy_bundle/``); needed by the ``policy`` arm."""
    serve: dict[str, Any] = Field(default_factory=lambda: {"model": "minilm", "min_confidence": 0.0,
                                                           "torch_threads": 1})
    """``ServeConfig`` fields of the healer (``ifshm_ray/serve/config.py``). Default: the MiniLM encoder preset
    (the fine-tuned SmolLM2 encoder is too slow for 2 shared cores beside the target) whose fault head is then
    untrained, so ``min_confidence`` is 0: escalation comes from the policy's own choice, not from an untrained
    diagnosis. The policy's observation does not use the encoder. ``missing_metrics`` (default ``steady_state``):
    the series of the simulator that a live window lacks (every entity without a live binding, every metric
    without a PromQL mapping) are read at the simulator's fault-free values, as the policy saw healthy entities in
    training, and listed in each answer's ``imputed_metrics``."""
    startup_timeout_s: float = Field(240.0, gt=0.0)
    """The healer must answer ``/healthz`` within this long (loading the bundle and the encoder)."""
    request_timeout_s: float = Field(30.0, gt=0.0)
    """Timeout of one ``/v1/heal`` call; a call that fails counts as no decision for that window."""
    receive_alerts: bool = True
    """Alertmanager also posts its webhooks to the healer's ``/v1/alertmanager`` (``stack.healer_url``)."""


class EvalConfig(ConfigModel):
    """``jobs/live_eval.py``: which faults, which healers, how often, how long."""

    faults: list[str] = Field(default_factory=list)
    """Fault names from the plan file to inject, in order; empty: every fault of the plan file."""
    arms: list[Literal["policy", "runbook", "none"]] = Field(default_factory=lambda: ["runbook", "none"])
    """Who handles each fault: the trained policy through the healer's ``/v1/heal`` (section ``healer``), the
    project's runbook on the live telemetry, or nobody."""
    repeats: int = Field(1, ge=1)
    """Incidents per (fault, arm)."""
    arm_cap_s: float = Field(120.0, gt=0.0)
    """An incident not recovered this long after the injection counts as not healed, at the cap."""
    settle_s: float = Field(20.0, ge=0.0)
    """After an incident is undone, wait at most this long for the probe to be green again before the next."""
    max_skipped_in_a_row: int = Field(3, ge=1)
    """Stop the run (a clear error, the incidents so far reported) when this many incidents in a row were skipped
    because the stack was not green before injecting (a box too loaded for the SLO measured at start, a component
    that did not come back): later incidents would be skipped too and measure nothing."""
    window_s: float = Field(30.0, gt=0.0)
    """Telemetry window the collector builds for each decision (Prometheus range queries and log lines)."""
    probe_interval_s: float = Field(1.0, gt=0.0)
    """The recovery probe reads the load generator's last window every this many seconds."""
    out: str = "results/live"
    """Output folder (metrics.json, audit.jsonl, incidents.parquet)."""
    stats: StatsConfig = Field(default_factory=StatsConfig)
    """Bootstrap intervals of the wall-clock MTTR (:mod:`ifshm_ray.eval.stats`)."""
    timelines: bool = True
    """Write a PNG timeline per incident (``OUT/timelines/``: metric, alerts, actions, recovery)."""


class LiveConfig(ConfigModel):
    """The live-healing stack's settings in one file (``configs/live.yaml``); each section is one piece's."""

    binding: str | None = None
    """Binding file (simulator entity -> live component); None: the committed ``ifshm_ray/live/data/binding.yaml``."""
    faults: str | None = None
    """Fault plan file; None: the committed ``ifshm_ray/live/data/faults.yaml``."""
    decision_interval_s: float = Field(10.0, gt=0.0)
    """The healer decides once per wall-clock window of this length (use at least 3 of Ray's metric report
    intervals: ``RAY_metrics_report_interval_ms``)."""
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    """The safe executor's switches and limits."""
    handlers: HandlerConfig = Field(default_factory=HandlerConfig)
    """Timeouts and bounds of the real handlers."""
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    """Bounds of the fault proxy."""
    injectors: InjectorConfig = Field(default_factory=InjectorConfig)
    """Bounds of the fault injectors."""
    slo: SloProbeConfig = Field(default_factory=SloProbeConfig)
    """The wall-clock SLO probe."""
    loadgen: LoadConfig = Field(default_factory=LoadConfig)
    """The loopback load generator."""
    stack: StackConfig = Field(default_factory=StackConfig)
    """The target stack (processes, sizes, telemetry cadence)."""
    healer: HealerConfig = Field(default_factory=HealerConfig)
    """The trained-policy arm's healer process."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """The live evaluation job."""

"""The alert trigger of a policy trained with ``policy.act_on: alert``.

An operator's healer is opened by an incident: an alert (Alertmanager's webhook) or a broken SLO. A policy that may
act in any state pays for exploring actions in calm windows, which are most of the time (the windows before a fault
shows, fault-free episodes), and learns to act on nothing: measured, every PPO policy of the v2 sweep acted in every
fault-free episode. With the trigger, the policy's only action while the telemetry shows no incident is ``observe``;
the trigger is runbook-instant's (:func:`ifshm_ray.baselines.policies.runbook_trigger`: an alert other than the
runbook's info-level ``ignore_alerts`` is pending or firing) or any SLO broken by the reported metrics. Both are
features of the observation (its alert flags and ``slo_green``), so the trigger is a function of the telemetry
only and the module applies it itself (:meth:`ifshm_ray.policy.module._MaskedRecoveryModuleBase.masks`).
"""
from __future__ import annotations


def trigger_spec(env_config: dict | None) -> dict:
    """``model_config["act_trigger"]`` for the env built from ``env_config`` (the training config's ``env.config``):
    ``{"flags": [observation indices of the pending-or-firing flags of the incident-opening alert rules],
    "slo_green": index of the SLO-green feature, "observe": index of the observe category}``."""
    from ifshm_ray.baselines.policies import ignored_alerts
    from ifshm_ray.sim.actions import CATEGORIES

    layout, alerts = _layout_and_alerts(env_config)
    ignore = ignored_alerts()
    g = int(layout["global_offset"])  # the pending flags (firing included) come first, one per rule
    flags = [g + i for i, a in enumerate(alerts) if a.name not in ignore]
    if not flags:
        raise ValueError("act_on: alert needs at least one alert rule outside the runbook's ignore_alerts")
    return {"flags": flags, "slo_green": int(layout["slo_green"]), "observe": CATEGORIES.index("observe")}


def entity_layout(env_config: dict | None) -> dict:
    """``model_config["entity_layout"]`` for the env built from ``env_config``: where each target's features and the
    incident memory are in its observation (:func:`ifshm_ray.env.features.obs_layout`), for the entity target head."""
    layout, _ = _layout_and_alerts(env_config)
    return {k: int(layout[k]) for k in ("target_feat", "memory_offset", "memory_slots", "memory_slot_feat")}


def _layout_and_alerts(env_config: dict | None) -> tuple[dict, list]:
    """The observation layout (:func:`ifshm_ray.env.features.obs_layout`) and alert rules of the env built from
    ``env_config``."""
    from ifshm_ray.env import FaultInjectionEnv
    from ifshm_ray.env.fault_env import VECTOR_ONLY_KEYS

    cfg = {k: v for k, v in dict(env_config or {}).items() if k not in VECTOR_ONLY_KEYS}
    env = FaultInjectionEnv({**cfg, "render_telemetry": False})
    try:
        return dict(env.obs_layout), list(env.sim.alerts)
    finally:
        env.close()

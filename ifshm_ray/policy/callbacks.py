"""RLlib callback that turns the env's episode-end ``info`` into healing metrics.

At episode end the env's ``info`` holds ``mttr_s``, ``recovered``, ``success`` and ``harmful_actions``. They are
logged on every env runner and reduced (mean over the last ``WINDOW`` episodes) into the training result under
``result["env_runners"]["ifshm/<name>"]``: ``ifshm/mttr_s``, ``ifshm/success_rate``, ``ifshm/recovered_rate``,
``ifshm/harmful_actions``. Fault-free episodes (``info["fault_free"]``) have no MTTR, success or recovery; they log
``ifshm/false_action_rate`` instead (1 when the policy took any action other than observe).
"""
from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

METRIC_PREFIX = "ifshm/"
MTTR_KEY = METRIC_PREFIX + "mttr_s"
SUCCESS_KEY = METRIC_PREFIX + "success_rate"
RECOVERED_KEY = METRIC_PREFIX + "recovered_rate"
HARMFUL_KEY = METRIC_PREFIX + "harmful_actions"
FALSE_ACTION_KEY = METRIC_PREFIX + "false_action_rate"
WINDOW = 100

_INFO_TO_METRIC = {
    "mttr_s": MTTR_KEY,
    "success": SUCCESS_KEY,
    "recovered": RECOVERED_KEY,
    "harmful_actions": HARMFUL_KEY,
}


class HealingMetricsCallback(RLlibCallback):
    """Logs MTTR, success/recovery rate and harmful actions from the last ``info`` of each episode."""

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs: Any) -> None:
        if metrics_logger is None:
            return
        info = episode.get_infos(-1) or {}
        if info.get("fault_free"):
            if "actions" in info:
                metrics_logger.log_value(FALSE_ACTION_KEY, float(info["actions"] > 0), reduce="mean", window=WINDOW)
            return
        for info_key, metric in _INFO_TO_METRIC.items():
            if info_key in info and info[info_key] is not None:
                metrics_logger.log_value(metric, float(info[info_key]), reduce="mean", window=WINDOW)

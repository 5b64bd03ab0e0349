"""Reference policies: random, runbook (rules on alerts with their `for:` delays), runbook-instant (same rules at
the first threshold crossing) and oracle (knows the fault; the best achievable MTTR)."""
from ifshm_ray.baselines.policies import (BASELINES, OraclePolicy, Policy, RandomPolicy, RunbookPolicy,
                                          make_baseline)

__all__ = ["BASELINES", "OraclePolicy", "Policy", "RandomPolicy", "RunbookPolicy", "make_baseline"]

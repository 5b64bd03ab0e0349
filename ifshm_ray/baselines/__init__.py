"""Reference policies: random; runbook (rules on alerts with their `for:` delays, blind: only the rules written for
the split's known fault types and the generic ones), runbook-full (every rule), runbook-instant (blind, at the first
threshold crossing); escalate-first (pages a human at runbook-instant's trigger); nearest-known (the nearest known
fault type's remedies, then escalate; :mod:`ifshm_ray.baselines.nearest`) and oracle (knows the fault; the best
achievable MTTR)."""
from ifshm_ray.baselines.policies import (BASELINES, EscalateFirstPolicy, OraclePolicy, Policy, RandomPolicy,
                                          RunbookPolicy, blind_rules, load_runbook, make_baseline)

__all__ = ["BASELINES", "EscalateFirstPolicy", "OraclePolicy", "Policy", "RandomPolicy", "RunbookPolicy",
           "blind_rules", "load_runbook", "make_baseline"]

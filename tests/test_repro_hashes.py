"""Behaviour-preserving refactors keep the simulator's rollouts and the references' metrics bit-identical.

``benchmarks/repro_hashes.py`` hashes single-env rollouts with raw telemetry of every fault type, a batched
(vector-env) rollout and the evaluation records of every reference policy (BASELINES); the reference hashes
in ``tests/data/repro_hashes.json`` were recorded before the consolidation refactor. A deliberate behaviour change
re-records them with ``python benchmarks/repro_hashes.py --write`` and says why in its commit.
"""
from __future__ import annotations

import json

import pytest
from conftest import load_benchmark



def test_one_fault_rollout_hash_is_stable():
    """Fast tier: one fault's single-env rollout, twice in one process and against the recorded reference."""
    mod = load_benchmark("repro_hashes")
    ref = json.loads(mod.REFERENCE.read_text())
    faults = list(mod.load_catalog().names)
    i = faults.index("host_memory_leak")
    h = mod.single_hash("host_memory_leak", seed=100 + i)
    assert h == mod.single_hash("host_memory_leak", seed=100 + i)
    assert h == ref["single/host_memory_leak"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_all_hashes_match_reference():
    mod = load_benchmark("repro_hashes")
    ref = json.loads(mod.REFERENCE.read_text())
    got = mod.compute()
    diff = mod.compare(ref, got)
    assert not any(diff.values()), mod.describe(diff)


def test_every_reference_is_hashed_and_a_missing_hash_is_named():
    """Fast tier: the evaluation hashes cover every reference of BASELINES, and a check against a reference file
    that lacks one names it (and says how to record it) rather than reporting a vague change."""
    from ifshm_ray.baselines import BASELINES

    mod = load_benchmark("repro_hashes")
    assert mod.POLICIES == tuple(BASELINES)
    got = {"single/node_crash": "a", "eval/oracle": "b", "eval/nearest-known": "c"}
    ref = {"single/node_crash": "a", "eval/oracle": "x", "eval/gone": "d"}
    diff = mod.compare(ref, got)
    assert diff == {"changed": ["eval/oracle"], "missing": ["eval/nearest-known"], "stale": ["eval/gone"]}
    msg = mod.describe(diff)
    assert "no reference hash for ['eval/nearest-known']" in msg and "--write" in msg
    assert "['eval/gone']" in msg and "behaviour changed for ['eval/oracle']" in msg
    assert mod.describe(mod.compare(ref, ref)) == ""

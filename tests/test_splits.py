"""Named known/unknown splits of the fault catalog (ifshm_ray/sim/data/splits.yaml)."""
import pytest

from ifshm_ray.config import SimConfig
from ifshm_ray.sim.catalog import CatalogError, load_catalog
from ifshm_ray.sim.core import BatchedSim, SimError

pytestmark = pytest.mark.timeout(60)


def test_every_split_partitions_the_catalog():
    cat = load_catalog()
    assert cat.default_split in cat.splits
    for name in cat.splits:
        known, unknown = cat.known_in(name), cat.unknown_in(name)
        assert known and unknown
        assert not set(known) & set(unknown)
        assert sorted(known + unknown) == sorted(cat.names)
        assert cat.select("known", split=name) == known
        assert cat.select("unknown", split=name) == unknown


def test_handpicked_split_is_the_original_six():
    cat = load_catalog()
    assert set(cat.unknown_in("handpicked")) == {
        "gpu_xid95_uncontained_ecc", "infiniband_link_errors", "clock_skew_tls", "vllm_engine_dead",
        "kv_cache_exhaustion", "rwo_volume_multi_attach"}


def test_unknown_split_name_is_refused_with_the_names():
    cat = load_catalog()
    with pytest.raises(CatalogError, match="unknown split 'nope'.*handpicked"):
        cat.known_in("nope")
    with pytest.raises(SimError, match="unknown split 'nope'"):
        BatchedSim(SimConfig(split="nope"))


def test_named_splits_random_and_leave_one_group_out():
    cat = load_catalog()
    random = [n for n in cat.splits if n.startswith("random")]
    logo = [n for n in cat.splits if n.startswith("logo_")]
    assert len(random) == 3 and all(len(cat.unknown_in(n)) == 6 for n in random)
    assert 4 <= len(logo) <= 6 and len(logo) == len(cat.groups)
    for name, sp in cat.splits.items():
        assert sp["description"].strip(), name
    # leave-one-group-out: the held-out set is exactly the group's families; the groups cover every family once
    fams = [f for g in cat.groups.values() for f in g["families"]]
    assert sorted(fams) == sorted({f.family for f in cat.faults})
    held_union = []
    for name in logo:
        group = cat.splits[name]["holdout_group"]
        assert set(cat.unknown_in(name)) == {f.name for f in cat.faults if f.family in cat.groups[group]["families"]}
        held_union += cat.unknown_in(name)
    assert sorted(held_union) == sorted(cat.names)  # every type is held out in exactly one group split


def test_frozen_random_splits_equal_the_recorded_draw():
    from ifshm_ray.sim.splits import draw_random_splits

    cat = load_catalog()
    draw = cat.random_draw
    assert draw["command"] == f"python -m ifshm_ray.sim.splits draw --seed {draw['seed']}"
    assert set(draw["population"]) <= set(cat.names)
    redrawn = draw_random_splits(draw["population"], draw["seed"])
    assert sorted(redrawn) == sorted(n for n in cat.splits if n.startswith("random"))
    for name, held in redrawn.items():
        assert sorted(cat.splits[name]["unknown"]) == sorted(held), name
    assert draw_random_splits(draw["population"], draw["seed"] + 1) != redrawn  # the seed matters


def test_draw_cli_prints_the_frozen_draw(capsys):
    import yaml

    from ifshm_ray.sim.splits import main

    cat = load_catalog()
    main(["draw", "--seed", str(cat.random_draw["seed"])])
    printed = yaml.safe_load(capsys.readouterr().out)
    if sorted(cat.names) == sorted(cat.random_draw["population"]):  # (types added later would change the draw)
        for name, held in printed["splits"].items():
            assert sorted(held) == sorted(cat.unknown_in(name))


def _write_catalog_with_splits(tmp_path, monkeypatch, doc):
    import shutil

    import yaml

    from ifshm_ray.sim import catalog as catmod

    data = tmp_path / "data"
    shutil.copytree(catmod.DATA_DIR, data)
    (data / "splits.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(catmod, "DATA_DIR", data)


@pytest.mark.parametrize("doc, match", [
    ({"splits": {"a": {"description": "x", "unknown": ["nope"]}}, "default": "a"}, "unknown fault name"),
    ({"splits": {"a": {"unknown": ["node_crash"]}}, "default": "a"}, "has no description"),
    ({"splits": {"a": {"description": "x"}}, "default": "a"}, "exactly one of 'unknown'"),
    ({"splits": {"a": {"description": "x", "holdout_group": "g"}}, "default": "a"}, "holdout_group 'g' is not"),
    ({"groups": {"g": {"families": ["nope"]}}, "splits": {"a": {"description": "x", "unknown": ["node_crash"]}},
      "default": "a"}, "no catalog fault has"),
    ({"groups": {"g": {"families": ["node"]}, "h": {"families": ["node"]}},
      "splits": {"a": {"description": "x", "unknown": ["node_crash"]}}, "default": "a"}, "is in groups"),
    ({"splits": {"a": {"description": "x", "unknown": ["node_crash"]}}, "default": "b"}, "default split 'b'"),
    ({"splits": {"a": {"description": "x", "unknown": ["node_crash"], "seed": 1}}, "default": "a"}, "unknown key"),
])
def test_bad_splits_file_is_refused(tmp_path, monkeypatch, doc, match):
    _write_catalog_with_splits(tmp_path, monkeypatch, doc)
    with pytest.raises(CatalogError, match=match):
        load_catalog()


def test_a_split_holding_out_everything_is_refused(tmp_path, monkeypatch):
    names = load_catalog().names
    _write_catalog_with_splits(tmp_path, monkeypatch, {"splits": {"a": {"description": "x", "unknown": names}},
                                                       "default": "a"})
    with pytest.raises(CatalogError, match="known set is empty"):
        load_catalog()


def test_known_is_the_splits_everywhere_in_the_simulator():
    cat = load_catalog()
    assert not hasattr(cat.faults[0], "known")  # the per-fault flag of catalog.yaml is ignored
    with pytest.raises(CatalogError, match="of which split"):
        cat.select("known")
    from ifshm_ray.env.fault_env import FaultInjectionEnv

    for split in ("handpicked", "random1", "logo_gpu"):
        sim = BatchedSim(SimConfig(split=split, faults="unknown"), batch_size=4)
        assert sim.fault_names == cat.unknown_in(split)
        env = FaultInjectionEnv({"split": split, "faults": "unknown", "render_telemetry": False})
        seen = set()
        for seed in range(12):
            env.reset(seed=seed)
            for f in env.incident()["faults"]:
                assert f["known"] is False and f["fault"] in cat.unknown_in(split)
                seen.add(f["fault"])
        assert seen  # (fault-free episodes inject nothing)


@pytest.mark.timeout(180)
def test_semantic_table_is_built_for_the_env_split(tmp_path):
    from ifshm_ray.encoding.rl_state import _lm_source, build_table, check_semantic_split, load_table
    from ifshm_ray.encoding.service import EncoderWorker

    table = load_table(build_table("tiny-llama", {"split": "logo_gpu"}, tmp_path))
    assert table["meta"]["split"] == "logo_gpu"
    check_semantic_split(None, str(tmp_path), "logo_gpu")
    with pytest.raises(ValueError, match="built for split 'logo_gpu', the run trains on split 'random1'"):
        check_semantic_split(None, str(tmp_path), "random1")
    src = _lm_source("tiny-llama", {}, "logo_gpu")  # an un-tuned encoder over the split's known types
    assert src["fault_types"] == load_catalog().known_in("logo_gpu")
    assert EncoderWorker(**src).info()["fault_types"] == src["fault_types"]

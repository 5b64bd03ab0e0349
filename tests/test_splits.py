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

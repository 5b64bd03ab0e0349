"""cluster.yaml is a valid Ray cluster-launcher config: it validates against the JSON schema shipped inside the ray
package and passes the launcher's own checks; it has a CPU head, CPU simulation workers and A100 GPU workers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@pytest.mark.timeout(30)
def test_cluster_yaml_matches_ray_schema(cluster):
    import jsonschema
    import ray

    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(cluster, schema)
    # the launcher's checks on the config after its defaults are filled in (what `ray up` runs first)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cluster))


@pytest.mark.timeout(30)
def test_cluster_node_types(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    cpu = [name for name, t in types.items() if name != cluster["head_node_type"] and not t["resources"].get("GPU")]
    assert gpu and cpu
    assert all(t["node_config"]["InstanceType"] in ("p4d.24xlarge", "p4de.24xlarge") for t in gpu)  # A100s
    assert all(t["resources"].get("encoder_gpu") for t in gpu)  # configs/cluster_serve.yaml schedules onto them
    for t in types.values():
        if t is not head:
            assert 0 <= t["min_workers"] <= t["max_workers"]
    assert cluster["max_workers"] >= sum(t.get("max_workers", 0) for t in types.values() if t is not head)
    setup = " ".join(cluster["setup_commands"])
    # CUDA torch first, then the project with the pinned constraints
    assert setup.index("download.pytorch.org") < setup.index("constraints.txt")
    serve_cfg = yaml.safe_load((REPO / "configs" / "cluster_serve.yaml").read_text())
    enc = next(d for d in serve_cfg["applications"][0]["deployments"] if d["name"] == "IFSHMEncoder")
    assert set(enc["ray_actor_options"]["resources"]) <= set(gpu[0]["resources"])

"""The binding file (simulator entity names -> live components) and the live config models: checked, documented,
loadable from configs/live.yaml, with messages that say what to fix."""
from __future__ import annotations

import pytest
import yaml

from ifshm_ray.config import ConfigError, TopologyConfig
from ifshm_ray.live.binding import DEFAULT_BINDING, load_binding, simulator_targets

pytestmark = pytest.mark.timeout(30)


def test_committed_binding_loads_and_uses_simulator_names():
    b = load_binding()
    targets = simulator_targets()
    assert set(b.entities) <= set(targets)
    assert b.component_for("api-gateway")[1].kind == "nginx"
    assert b.component_for("inference-server")[1].kind == "serve_deployment"
    assert b.component_for("feature-store")[1].kind == "redis"
    assert b.component_for("coredns") is None  # no live counterpart: the executor escalates


def _write(tmp_path, data) -> str:
    p = tmp_path / "binding.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def _data() -> dict:
    return yaml.safe_load(DEFAULT_BINDING.read_text())


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["entities"].update({"api-gw": "nginx"}), r"\['api-gw'\] are not simulator entities; valid names"),
    (lambda d: d["entities"].update({"coredns": "dns"}), r"not defined: \{'coredns': 'dns'\}"),
    (lambda d: d["components"]["model"].pop("app"), "needs both 'app' and 'deployment'"),
    (lambda d: d["components"]["box"].update(prune_folder="/var/lib"), "must be a relative path"),
    (lambda d: d["components"]["box"].update(prune_folder="a/../../etc"), "without '..'"),
    (lambda d: d["components"]["redis"].update(kind="redis-server"), "components.redis.kind"),
    (lambda d: d["components"]["redis"].update(port=6379), "unknown config key"),
])
def test_bad_binding_files_are_refused_with_the_fix(tmp_path, edit, message):
    data = _data()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=message) as e:
        load_binding(path)
    assert path in str(e.value)


def test_entities_checked_against_the_topology_given():
    # gpu-0 exists in every topology; gpu-5 only with 6 GPU nodes
    data = _data()
    data["entities"]["gpu-5"] = "box"
    from ifshm_ray.live.binding import Binding

    b = Binding.from_dict(data)
    b.check_entities(simulator_targets(TopologyConfig(gpu_nodes=6)))
    with pytest.raises(ConfigError, match="gpu-5"):
        b.check_entities(simulator_targets(TopologyConfig(gpu_nodes=2, inference_replicas=2,
                                                          training_workers=2)))


def test_every_live_config_field_is_documented():
    from ifshm_ray.live import config, injectors, proxy
    from ifshm_ray.live.binding import Binding, LiveComponent

    models = [config.LiveConfig, config.ExecutorConfig, config.HandlerConfig, config.ProxyConfig, config.InjectorConfig,
              config.SloProbeConfig, proxy.FaultSpec, injectors.FaultPlan, injectors.FaultPlanFile, Binding,
              LiveComponent]
    undocumented = [f"{m.__name__}.{n}" for m in models for n, f in m.model_fields.items() if not f.description]
    assert undocumented == []


def test_live_config_file_loads_with_overrides():
    from pathlib import Path

    from ifshm_ray.config import load_config
    from ifshm_ray.live.config import LiveConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "live.yaml"
    cfg = load_config(LiveConfig, path)
    assert cfg.executor.execute is False and cfg.executor.max_actions_per_incident == 3
    assert load_config(LiveConfig, path, ["executor.execute=true"]).executor.execute is True
    with pytest.raises(ConfigError, match="executor.max_replicas"):
        load_config(LiveConfig, path, ["executor.max_replicas=0"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(LiveConfig, path, ["executor.dry_run=false"])

"""The executor's real handlers against local fakes: a fake Ray dashboard Serve API, a fake Redis speaking RESP,
a prune folder in a temp run dir, and an nginx upstream file with stand-in reload/test commands. Each also runs
through the SafeExecutor (execute, then revert on a worse probe). Everything on 127.0.0.1; no Ray, no nginx."""
from __future__ import annotations

import copy
import socketserver
import sys

import pytest
from live_helpers import app_detail, dashboard, serving  # noqa: F401  (dashboard: a fixture)

from ifshm_ray.config import ConfigError
from ifshm_ray.live.binding import LiveComponent, load_binding
from ifshm_ray.live.config import ExecutorConfig, HandlerConfig
from ifshm_ray.live.executor import ActionRequest, SafeExecutor
from ifshm_ray.live.handlers import (RESTART_NONCE_VAR, NginxRestartHandler, NginxUpstreamHandler,
                                     PruneFolderHandler, RedisMaxmemoryHandler, ServeAppHandler, build_handlers,
                                     redis_command, render_upstream)
from ifshm_ray.live.serve_api import record_deploy

pytestmark = pytest.mark.timeout(30)
CFG = HandlerConfig(http_timeout_s=5, redis_timeout_s=5, reload_timeout_s=5)
MODEL = LiveComponent(kind="serve_deployment", app="target", deployment="Model")


def req(category: str, binding: LiveComponent = MODEL, ratio: float | None = None, component: str = "model"):
    return ActionRequest(category=category, target="inference-server", component=component, binding=binding,
                         ratio=ratio)


def test_scale_puts_every_app_and_undo_restores(dashboard):
    h = ServeAppHandler(dashboard.url, CFG)
    plan = h.scale(req("scale", ratio=2.0))
    assert plan.problems == [] and plan.replicas == (2, 4) and dashboard.puts == []  # planning changes nothing
    plan.execute()
    body = dashboard.puts[-1]
    assert [a["name"] for a in body["applications"]] == ["target", "other"]  # the other app is kept
    assert body["http_options"] == {"host": "127.0.0.1", "port": 8000}
    model = body["applications"][0]["deployments"][0]
    assert model == {"name": "Model", "user_config": {"version": "good"}, "num_replicas": 4}
    plan.undo()
    assert "num_replicas" not in dashboard.puts[-1]["applications"][0]["deployments"][0]


def test_restart_sets_a_nonce_and_keeps_actor_options(dashboard):
    ServeAppHandler(dashboard.url, CFG).restart(req("restart")).execute()
    opts = dashboard.puts[-1]["applications"][0]["deployments"][0]["ray_actor_options"]
    assert opts["num_cpus"] == 0.5 and RESTART_NONCE_VAR in opts["runtime_env"]["env_vars"]


def test_rollback_to_the_config_before_the_running_one(dashboard, tmp_path):
    history = tmp_path / "deploys.jsonl"
    h = ServeAppHandler(dashboard.url, CFG, history_path=history)
    assert "no deploy history" in h.rollback(req("rollback")).problems[0]
    good = dashboard.details["applications"]["target"]["deployed_app_config"]
    record_deploy(history, good)
    assert "first one deployed" in h.rollback(req("rollback")).problems[0]
    bad = copy.deepcopy(good)
    bad["deployments"][0]["user_config"] = {"version": "bad"}
    record_deploy(history, bad)
    dashboard.apply({"applications": [bad, dashboard.details["applications"]["other"]["deployed_app_config"]]})
    plan = h.rollback(req("rollback"))
    assert plan.problems == []
    plan.execute()
    assert dashboard.details["applications"]["target"]["deployed_app_config"] == good
    plan.undo()
    assert dashboard.details["applications"]["target"]["deployed_app_config"] == bad


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["applications"].pop("target"), "is not running"),
    (lambda d: d["applications"].update(other=app_detail("other", imperative=True)), "not deployed from a config"),
    (lambda d: d["applications"]["target"]["deployments"].pop("Model"), "is not in application"),
    (lambda d: d["applications"]["target"]["deployments"]["Model"]["deployment_config"].update(
        autoscaling_config={"min_replicas": 1}), "autoscales"),
])
def test_serve_pre_checks(dashboard, edit, message):
    edit(dashboard.details)
    plan = ServeAppHandler(dashboard.url, CFG).scale(req("scale", ratio=2.0))
    assert any(message in p for p in plan.problems), plan.problems


def test_serve_handler_through_the_executor_reverts_on_worse_slo(dashboard, tmp_path):
    badness = {"now": 0.0}
    ex = SafeExecutor(ExecutorConfig(execute=True, verify_after_s=0.0, audit_log=str(tmp_path / "a.jsonl")),
                      load_binding(), build_handlers(serve=ServeAppHandler(dashboard.url, CFG)),
                      probe=lambda: badness["now"])
    rec = ex.decide(incident="i", answer={"action": {"category": "scale", "target": "inference-server",
                                                     "ratio": 1.5}})
    assert rec["outcome"] == "executed" and rec["reply"]["status"] == 200
    assert dashboard.details["applications"]["target"]["deployments"]["Model"]["deployment_config"][
        "num_replicas"] == 3
    badness["now"] = 5.0
    assert ex.poll()["outcome"] == "reverted"
    assert dashboard.details["applications"]["target"]["deployments"]["Model"]["deployment_config"][
        "num_replicas"] == 2
    dashboard.fail_put = True
    ex.cfg.cooldown_s = 0
    rec = ex.decide(incident="j", answer={"action": {"category": "restart", "target": "inference-server"}})
    assert rec["outcome"] == "failed" and "400" in rec["reason"]


def test_kind_mismatch_and_non_loopback_refused(dashboard):
    redis = LiveComponent(kind="redis")
    assert "acts on serve_deployment" in ServeAppHandler(dashboard.url, CFG).scale(req("scale", redis)).problems[0]
    with pytest.raises(ConfigError, match="127.0.0.1"):
        ServeAppHandler("http://192.168.1.5:8265", CFG)


# ------------------------------------------------------------------------------------------------ fake Redis
class FakeRedis(socketserver.StreamRequestHandler):
    """CONFIG GET/SET maxmemory over RESP; anything else is an error reply."""

    store = {"maxmemory": "67108864"}

    def handle(self):
        while True:
            head = self.rfile.readline()
            if not head:
                return
            args = []
            for _ in range(int(head[1:])):
                n = int(self.rfile.readline()[1:])
                args.append(self.rfile.read(n + 2)[:-2].decode())
            if args[:2] == ["CONFIG", "GET"]:
                v = self.store[args[2]].encode()
                self.wfile.write(b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(args[2]), args[2].encode(), len(v), v))
            elif args[:2] == ["CONFIG", "SET"]:
                self.store[args[2]] = args[3]
                self.wfile.write(b"+OK\r\n")
            else:
                self.wfile.write(b"-ERR unknown command\r\n")


@pytest.fixture
def redis_port():
    FakeRedis.store = {"maxmemory": "67108864"}
    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), FakeRedis)) as port:
        yield port


def test_redis_resp_client(redis_port):
    assert redis_command(redis_port, "CONFIG", "GET", "maxmemory") == ["maxmemory", "67108864"]
    with pytest.raises(RuntimeError, match="unknown command"):
        redis_command(redis_port, "FLUSHALL")
    with pytest.raises(ConfigError):
        redis_command(redis_port, "PING", host="10.0.0.1")


@pytest.mark.parametrize("ratio,problem", [(2.0, None), (0.1, "outside"), (100.0, "outside"), (None, "ratio")])
def test_redis_reallocate(redis_port, ratio, problem):
    h = RedisMaxmemoryHandler(redis_port, CFG)
    plan = h.reallocate(req("reallocate", LiveComponent(kind="redis"), ratio=ratio, component="redis"))
    if problem:
        assert problem in plan.problems[0] and FakeRedis.store["maxmemory"] == "67108864"
        return
    assert plan.execute() == "OK" and FakeRedis.store["maxmemory"] == str(2 * 67108864)
    assert plan.undo() == "OK" and FakeRedis.store["maxmemory"] == "67108864"


def test_redis_unlimited_is_refused(redis_port):
    FakeRedis.store["maxmemory"] = "0"
    plan = RedisMaxmemoryHandler(redis_port, CFG).reallocate(
        req("reallocate", LiveComponent(kind="redis"), ratio=2.0))
    assert "no limit" in plan.problems[0]


# ------------------------------------------------------------------------------------------------ prune folder
def test_prune_clears_only_inside_and_never_follows_links(tmp_path):
    run = tmp_path / "run"
    prunable = run / "model-cache" / "prunable"
    (prunable / "sub").mkdir(parents=True)
    (prunable / "a.bin").write_bytes(b"x" * 100)
    (prunable / "sub" / "b.bin").write_bytes(b"y" * 50)
    keep = tmp_path / "precious.txt"
    keep.write_text("keep me")
    (prunable / "link").symlink_to(keep)
    (run / "model-cache" / "model.bin").write_bytes(b"m")
    box = LiveComponent(kind="host", prune_folder="model-cache/prunable")
    plan = PruneFolderHandler(run, CFG).clear_storage(req("clear_storage", box, component="box"))
    assert plan.problems == [] and plan.call["entries"] == 3 and plan.undo is None
    reply = plan.execute()
    assert reply["removed"] == 3 and list(prunable.iterdir()) == []
    assert keep.read_text() == "keep me" and (run / "model-cache" / "model.bin").exists()


def test_prune_refuses_a_linked_or_missing_folder(tmp_path):
    run = tmp_path / "run"
    (run / "model-cache").mkdir(parents=True)
    box = LiveComponent(kind="host", prune_folder="model-cache/prunable")
    h = PruneFolderHandler(run, CFG)
    assert "not a plain folder" in h.clear_storage(req("clear_storage", box)).problems[0]
    (run / "model-cache" / "prunable").symlink_to(tmp_path)
    assert "not a plain folder" in h.clear_storage(req("clear_storage", box)).problems[0]
    assert "no prune_folder" in h.clear_storage(req("clear_storage", LiveComponent(kind="host"))).problems[0]


# ------------------------------------------------------------------------------------------------ nginx
@pytest.fixture
def nginx_setup(tmp_path):
    upstream = tmp_path / "upstream.conf"
    upstream.write_text(render_upstream("serve", "127.0.0.1:18080"))
    marker = tmp_path / "reloads"
    reload_cmd = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('reload\\n')", str(marker)]
    routes = {"proxy": "127.0.0.1:18080", "direct": "127.0.0.1:8000"}
    return upstream, marker, reload_cmd, routes


def test_reroute_switches_reloads_and_undoes(nginx_setup):
    upstream, marker, reload_cmd, routes = nginx_setup
    h = NginxUpstreamHandler(upstream, routes, reload_cmd, CFG)
    plan = h.reroute(req("reroute", LiveComponent(kind="nginx"), component="nginx"))
    assert plan.call["route_from"] == "proxy" and plan.call["route_to"] == "direct" and not marker.exists()
    plan.execute()
    assert "server 127.0.0.1:8000;" in upstream.read_text() and marker.read_text() == "reload\n"
    plan.undo()
    assert "server 127.0.0.1:18080;" in upstream.read_text() and marker.read_text() == "reload\n" * 2


def test_reroute_restores_the_file_when_the_config_test_fails(nginx_setup):
    upstream, marker, reload_cmd, routes = nginx_setup
    before = upstream.read_text()
    h = NginxUpstreamHandler(upstream, routes, reload_cmd, CFG,
                             test_cmd=[sys.executable, "-c", "import sys; sys.exit('emerg: bad config')"])
    with pytest.raises(RuntimeError, match="bad config"):
        h.reroute(req("reroute", LiveComponent(kind="nginx"))).execute()
    assert upstream.read_text() == before and not marker.exists()


def test_reroute_pre_checks(nginx_setup, tmp_path):
    upstream, _, reload_cmd, routes = nginx_setup
    upstream.write_text(render_upstream("serve", "127.0.0.1:9999"))
    plan = NginxUpstreamHandler(upstream, routes, reload_cmd, CFG).reroute(req("reroute", LiveComponent(kind="nginx")))
    assert "match no route" in plan.problems[0]
    with pytest.raises(ConfigError, match="two routes"):
        NginxUpstreamHandler(upstream, {"a": "127.0.0.1:1"}, reload_cmd, CFG)
    with pytest.raises(ConfigError, match="127.0.0.1"):
        NginxUpstreamHandler(upstream, {"a": "127.0.0.1:1", "b": "10.0.0.2:80"}, reload_cmd, CFG)


def test_nginx_restart_tests_restarts_and_undo_restores_the_files(tmp_path):
    conf, upstream = tmp_path / "nginx.conf", tmp_path / "upstream.conf"
    conf.write_text("events {}\n")
    upstream.write_text(render_upstream("serve", "127.0.0.1:18080"))
    restarts: list[int] = []
    h = NginxRestartHandler(lambda: restarts.append(1) or {"new_pid": len(restarts)}, [conf, upstream], CFG,
                            test_cmd=[sys.executable, "-c", "pass"])
    plan = h.restart(req("restart", LiveComponent(kind="nginx"), component="nginx"))
    assert not plan.problems and restarts == []  # planning changes nothing
    assert plan.execute()["restart"] == {"new_pid": 1} and restarts == [1]
    upstream.write_text(render_upstream("serve", "127.0.0.1:9"))  # something changed the files since
    reply = plan.undo()
    assert reply["restored"] == [str(upstream)] and restarts == [1, 1]
    assert "127.0.0.1:18080" in upstream.read_text()


def test_nginx_restart_pre_checks(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\n")
    never = NginxRestartHandler(lambda: pytest.fail("restarted"), [conf], CFG,
                                test_cmd=[sys.executable, "-c", "import sys; sys.exit('emerg: bad config')"])
    plan = never.restart(req("restart", LiveComponent(kind="nginx"), component="nginx"))
    assert "config test failed" in plan.problems[0] and "bad config" in plan.problems[0]
    plan = NginxRestartHandler(lambda: None, [tmp_path / "gone.conf"], CFG).restart(
        req("restart", LiveComponent(kind="nginx"), component="nginx"))
    assert "missing" in plan.problems[0]
    assert "acts on nginx" in never.restart(req("restart")).problems[0]
    with pytest.raises(ConfigError, match="config files"):
        NginxRestartHandler(lambda: None, [], CFG)


def test_restart_dispatches_on_the_component_kind(dashboard, tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\n")
    restarts: list[int] = []
    hs = build_handlers(serve=ServeAppHandler(dashboard.url, CFG),
                        nginx_restart=NginxRestartHandler(lambda: restarts.append(1), [conf], CFG))
    assert sorted(hs) == ["restart", "rollback", "scale"] and hs["restart"].kinds == ("nginx", "serve_deployment")
    serve_plan = hs["restart"](req("restart"))
    assert serve_plan.call["method"] == "PUT" and not serve_plan.problems
    hs["restart"](req("restart", LiveComponent(kind="nginx"), component="nginx")).execute()
    assert restarts == [1]
    refused = hs["restart"](req("restart", LiveComponent(kind="redis"), component="redis"))
    assert "['nginx', 'serve_deployment']" in refused.problems[0]
    # through the executor: the nginx restart is allow-listed now (it was refused as 'no handler' before)
    ex = SafeExecutor(ExecutorConfig(execute=True, verify_after_s=0, audit_log=str(tmp_path / "a.jsonl")),
                      load_binding(), hs, probe=lambda: 0.0)
    rec = ex.decide(incident="i", answer={"action": {"category": "restart", "target": "api-gateway"}})
    assert rec["outcome"] == "executed" and rec["component"] == "nginx" and restarts == [1, 1]
    assert ex.poll()["outcome"] == "verified"


def test_build_handlers_is_the_allow_list(tmp_path):
    hs = build_handlers(prune=PruneFolderHandler(tmp_path, CFG), redis=RedisMaxmemoryHandler(1, CFG))
    assert sorted(hs) == ["clear_storage", "reallocate"]


def test_redis_maxmemory_injector_sets_and_restores(redis_port):
    from ifshm_ray.live.config import InjectorConfig
    from ifshm_ray.live.injectors import FaultPlan, build_injector, experiment
    plan = FaultPlan(name="r", kind="redis_maxmemory", maxmemory_bytes=1048576, expected="reallocate")
    inj = build_injector(plan, InjectorConfig(), redis_port=redis_port)
    with experiment(inj) as run:
        assert FakeRedis.store["maxmemory"] == "1048576"
        assert run["injected"] == {"maxmemory_before": 67108864, "maxmemory": 1048576}
    assert FakeRedis.store["maxmemory"] == "67108864"
    with pytest.raises(ValueError, match="maxmemory_bytes"):
        FaultPlan(name="r", kind="redis_maxmemory")

"""Fault catalog: loads ``data/catalog.yaml`` (faults and action defaults), ``data/log_templates.yaml``,
``data/alerts.yaml`` and ``data/observability.yaml`` (how faults reach the telemetry), validates them, and compiles
them into numpy tables the batched simulator indexes by fault id. The catalog is data: adding a fault type means
adding a YAML entry, not a class."""
from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ifshm_ray.sim.actions import CATEGORIES, CATEGORY_INDEX, CATEGORY_TARGET_KIND, RATIO_LEVELS

DATA_DIR = Path(__file__).parent / "data"

SVC_CHANNELS = ("lat", "err", "tp", "cpu", "mem", "restarts", "unready")
NODE_CHANNELS = ("cpu", "mem", "disk", "gpu_drop", "temp", "xid", "fb", "net_err", "net_lat", "down", "clock")
SVC_CH = {c: i for i, c in enumerate(SVC_CHANNELS)}
NODE_CH = {c: i for i, c in enumerate(NODE_CHANNELS)}
EFFECTS = ("none", "heal", "mitigate", "harm")
EFFECT_CODE = {e: i for i, e in enumerate(EFFECTS)}
# remedy target specifiers (resolved against the injected root at run time)
TGT_DEFAULT, TGT_ROOT, TGT_SERVICES_ON_ROOT, TGT_NODE_OF_ROOT, TGT_NAMED = range(5)
# the pseudo fault name of a fault-free episode (no fault injected; benign noise and false alarms still happen)
FAULT_FREE = "none"


class CatalogError(ValueError):
    """The fault catalog (or a fault name asked of it) is invalid."""


@dataclass
class LogTemplate:
    id: str
    source: str
    level: str
    body: str
    fields: tuple[str, ...] = ()


@dataclass
class AlertRule:
    name: str
    scope: str
    metric: str
    op: str
    threshold: float
    for_s: float
    severity: str
    summary: str
    only_gpu_nodes: bool = False


@dataclass
class FaultSpec:
    name: str
    family: str
    known: bool
    freq: float
    description: str
    target: dict
    onset_s: float
    ramp_s: float
    effects: dict
    logs: list
    remedies: dict


@dataclass
class Observability:
    """``data/observability.yaml``: how faults reach the telemetry (see that file; every parameter has a source).

    ``shipped_prob``: per log source, the probability that the cluster ships it (once per episode);
    ``classes``: signature class -> (emit probability, delay quantiles [min, median, max] in seconds);
    ``template_class``: template id -> its class; ``benign``: the healthy log mix as (template id, emitting service,
    weight), INFO lines first, then the WARNING/ERROR noise weighted to make up ``noise_share`` of the lines."""
    shipped_prob: dict[str, float]
    classes: dict[str, tuple[float, tuple[float, float, float]]]
    template_class: dict[str, str]
    benign: list[tuple[str, str, float]]
    noise_share: float
    metric_effects: dict[str, dict] = field(default_factory=dict)
    """fault name -> extra effects {scope: {channel: value}} on metrics its catalog entry does not drive."""
    transients: list[dict] = field(default_factory=list)
    """benign transient kinds: {name, weight, scope (service | node), effects {channel: value}, duration_s (lo, hi),
    log (template id or None), log_rate (lines per window)}."""

    def emission(self, tpl: "LogTemplate") -> tuple[float, tuple[float, float, float], float]:
        """(emit probability, delay quantiles, shipped probability) of a fault's log entry with template ``tpl``."""
        p, q = self.classes[self.template_class[tpl.id]]
        return p, q, self.shipped_prob.get(tpl.source, 1.0)


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise CatalogError(f"observability.yaml: {msg}")


def _prob(x, where: str) -> float:
    _need(isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 <= x <= 1.0,
          f"{where} must be a probability in [0, 1], got {x!r}")
    return float(x)


def _sourced(d, where: str) -> dict:
    _need(isinstance(d, dict), f"{where} must be a mapping, got {d!r}")
    _need(isinstance(d.get("source"), str) and d["source"].strip() != "",
          f"{where} needs a 'source:' naming where its numbers come from")
    return d


def load_observability(raw: bytes, templates: list[LogTemplate]) -> Observability:
    """Parse and validate ``observability.yaml`` against the log templates."""
    doc = yaml.safe_load(raw)
    _need(isinstance(doc, dict), "must be a mapping with log_collection, signature_emission, benign_logs")
    missing = {"log_collection", "signature_emission", "benign_logs"} - set(doc)
    _need(not missing, f"missing section(s) {sorted(missing)}")
    sources = {t.source for t in templates}
    shipped = {}
    for src, d in (doc["log_collection"] or {}).items():
        _sourced(d, f"log_collection.{src}")
        _need(src in sources, f"log_collection.{src}: no log template has source {src!r}; sources: {sorted(sources)}")
        shipped[src] = _prob(d.get("shipped_prob"), f"log_collection.{src}.shipped_prob")
    se = doc["signature_emission"]
    _need(isinstance(se, dict) and isinstance(se.get("classes"), dict) and se["classes"],
          "signature_emission.classes must be a non-empty mapping")
    classes = {}
    for name, d in se["classes"].items():
        where = f"signature_emission.classes.{name}"
        _sourced(d, where)
        q = d.get("delay_s")
        _need(isinstance(q, list) and len(q) == 3 and all(isinstance(v, (int, float)) for v in q)
              and 0 <= q[0] <= q[1] <= q[2], f"{where}.delay_s must be [min, median, max] seconds, 0 <= min <= "
                                             f"median <= max, got {q!r}")
        classes[name] = (_prob(d.get("emit_prob"), f"{where}.emit_prob"), tuple(float(v) for v in q))
    default = se.get("default_class")
    _need(default in classes, f"signature_emission.default_class {default!r} is not one of {sorted(classes)}")
    by_src = se.get("class_of_source") or {}
    by_tpl = se.get("templates") or {}
    tids = {t.id for t in templates}
    for key, table, valid in (("class_of_source", by_src, sources), ("templates", by_tpl, tids)):
        for k, v in table.items():
            what = "template" if key == "templates" else "source"
            _need(k in valid, f"signature_emission.{key}: {k!r} is not a log template {what}")
            _need(v in classes, f"signature_emission.{key}.{k}: class {v!r} is not one of {sorted(classes)}")
    template_class = {t.id: by_tpl.get(t.id, by_src.get(t.source, default)) for t in templates}
    bl = doc["benign_logs"]
    _sourced(bl, "benign_logs")
    _sourced({"source": bl.get("noise_share_source")}, "benign_logs.noise_share (noise_share_source)")
    share = bl.get("noise_share")
    _need(isinstance(share, (int, float)) and 0.0 <= share < 1.0,
          f"benign_logs.noise_share must be in [0, 1), got {share!r}")
    level = {t.id: t.level for t in templates}
    mix = {}
    for part, levels in (("info", ("INFO",)), ("noise", ("WARNING", "ERROR"))):
        rows = bl.get(part)
        _need(isinstance(rows, list) and rows,
              f"benign_logs.{part} must be a non-empty list of [template, service, weight]")
        for r in rows:
            _need(isinstance(r, list) and len(r) == 3 and isinstance(r[2], (int, float)) and r[2] > 0,
                  f"benign_logs.{part}: entry {r!r} must be [template, service, weight > 0]")
            _need(r[0] in level, f"benign_logs.{part}: unknown log template {r[0]!r}")
            _need(level[r[0]] in levels, f"benign_logs.{part}: template {r[0]!r} is {level[r[0]]}, expected {levels}")
        mix[part] = rows
    ids = [r[0] for r in mix["info"] + mix["noise"]]
    _need(len(set(ids)) == len(ids), "benign_logs: a template appears twice (benign template ids must be distinct)")
    wi, wn = sum(r[2] for r in mix["info"]), sum(r[2] for r in mix["noise"])
    benign = ([(r[0], r[1], (1.0 - share) * r[2] / wi) for r in mix["info"]]
              + [(r[0], r[1], share * r[2] / wn) for r in mix["noise"]])
    effects = {}
    for name, d in (doc.get("metric_effects") or {}).items():
        _sourced(d, f"metric_effects.{name}")
        eff = {k: v for k, v in d.items() if k != "source"}
        _need(eff and all(isinstance(v, dict) and v for v in eff.values()),
              f"metric_effects.{name} must map scopes to {{channel: value}}, got {eff!r}")
        effects[name] = eff
    transients = []
    for name, d in (doc.get("benign_transients") or {}).items():
        where = f"benign_transients.{name}"
        _sourced(d, where)
        scope = d.get("scope")
        _need(scope in ("service", "node"), f"{where}.scope must be 'service' or 'node', got {scope!r}")
        valid = [c for c in (SVC_CHANNELS if scope == "service" else NODE_CHANNELS) if c not in ("down", "xid")]
        eff = d.get("effects")
        _need(isinstance(eff, dict) and eff and all(c in valid and isinstance(v, (int, float)) for c, v in eff.items()),
              f"{where}.effects must map channels of {valid} to numbers, got {eff!r}")
        dur = d.get("duration_s")
        _need(isinstance(dur, list) and len(dur) == 2 and all(isinstance(v, (int, float)) for v in dur)
              and 0 < dur[0] <= dur[1], f"{where}.duration_s must be [min, max] seconds, 0 < min <= max, got {dur!r}")
        w = d.get("weight")
        _need(isinstance(w, (int, float)) and w > 0, f"{where}.weight must be > 0, got {w!r}")
        log = d.get("log")
        if log is not None:
            _need(scope == "service", f"{where}.log: only service transients log (their service writes the line)")
            _need(isinstance(log, dict) and log.get("t") in level and level[log["t"]] in ("WARNING", "ERROR")
                  and isinstance(log.get("rate"), int) and log["rate"] >= 0,
                  f"{where}.log must be {{t: a WARNING/ERROR template, rate: lines per window}}, got {log!r}")
        transients.append({"name": name, "weight": float(w), "scope": scope, "effects": dict(eff),
                           "duration_s": (float(dur[0]), float(dur[1])), "log": log["t"] if log else None,
                           "log_rate": int(log["rate"]) if log else 0})
    _need(transients, "benign_transients must list at least one kind")
    return Observability(shipped_prob=shipped, classes=classes, template_class=template_class, benign=benign,
                         noise_share=float(share), metric_effects=effects, transients=transients)


@dataclass
class Catalog:
    faults: list[FaultSpec]
    templates: list[LogTemplate]
    alerts: list[AlertRule]
    actions: dict
    sha256: str
    observability: Observability | None = None
    splits: dict[str, dict] = field(default_factory=dict)
    default_split: str = "handpicked"
    fault_index: dict[str, int] = field(default_factory=dict)
    template_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.fault_index = {f.name: i for i, f in enumerate(self.faults)}
        self.template_index = {t.id: i for i, t in enumerate(self.templates)}

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.faults]

    @property
    def known(self) -> list[str]:
        """The known fault types of the default split (prefer :meth:`known_in` with the job's split)."""
        return self.known_in(self.default_split)

    @property
    def unknown(self) -> list[str]:
        """The held-out fault types of the default split (prefer :meth:`unknown_in` with the job's split)."""
        return self.unknown_in(self.default_split)

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise CatalogError(f"unknown split {split!r}; named splits: {sorted(self.splits)}")
        return split

    def unknown_in(self, split: str) -> list[str]:
        """Fault types held out in ``split`` (catalog order)."""
        held = set(self.splits[self.check_split(split)]["unknown"])
        return [n for n in self.names if n in held]

    def known_in(self, split: str) -> list[str]:
        """Fault types known (trained on) in ``split`` (catalog order)."""
        held = set(self.splits[self.check_split(split)]["unknown"])
        return [n for n in self.names if n not in held]

    def select(self, faults: str | list[str] | tuple[str, ...], split: str | None = None) -> list[str]:
        """Resolve 'known' | 'unknown' | 'all' (of ``split``, default: the catalog's default split) | list of names
        (or a comma-separated string) to fault names."""
        if isinstance(faults, str):
            if faults in ("known", "unknown", "all"):
                split = split or self.default_split
                return {"known": self.known_in(split), "unknown": self.unknown_in(split), "all": self.names}[faults]
            faults = [x.strip() for x in faults.split(",") if x.strip()]
        bad = [f for f in faults if f not in self.fault_index]
        if bad or not faults:
            raise CatalogError(
                f"unknown fault name(s) {bad}; use 'known', 'unknown', 'all' or names from the catalog: {self.names}")
        return list(faults)

    def spec(self, name: str) -> FaultSpec:
        if name not in self.fault_index:
            raise CatalogError(f"unknown fault name {name!r}; valid names: {self.names}")
        return self.faults[self.fault_index[name]]


def _fields(body: str, source: str) -> tuple[str, ...]:
    out = []
    for text in (body, source):
        for _, fname, _, _ in string.Formatter().parse(text):
            if fname and fname not in out:
                out.append(fname)
    return tuple(out)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate the catalog (default: the one shipped in the package)."""
    cpath = Path(path) if path else DATA_DIR / "catalog.yaml"
    if not cpath.is_file():
        raise CatalogError(f"fault catalog {str(cpath)!r} does not exist")
    raw_c = cpath.read_bytes()
    raw_t = (DATA_DIR / "log_templates.yaml").read_bytes()
    raw_a = (DATA_DIR / "alerts.yaml").read_bytes()
    raw_s = (DATA_DIR / "splits.yaml").read_bytes()
    raw_o = (DATA_DIR / "observability.yaml").read_bytes()
    sha = hashlib.sha256(raw_c + b"\0" + raw_t + b"\0" + raw_a + b"\0" + raw_o).hexdigest()
    c = yaml.safe_load(raw_c)
    templates = [LogTemplate(**t) for t in yaml.safe_load(raw_t)["templates"]]
    for t in templates:
        t.fields = _fields(t.body, t.source)
    alerts = [AlertRule(**a) for a in yaml.safe_load(raw_a)["rules"]]
    observability = load_observability(raw_o, templates)
    tids = {t.id for t in templates}
    actions = c["actions"]
    if set(actions) != set(CATEGORIES):
        raise CatalogError(f"catalog 'actions' must list exactly the categories {list(CATEGORIES)}")
    faults = []
    for f in c["faults"]:
        try:
            spec = FaultSpec(**f)
        except TypeError as e:
            raise CatalogError(f"fault entry {f.get('name', '?')!r}: {e}") from e
        _validate_fault(spec, tids)
        faults.append(spec)
    names = [f.name for f in faults]
    if len(set(names)) != len(names):
        raise CatalogError("duplicate fault names in the catalog")
    by_name = {f.name: f for f in faults}
    for name, eff in observability.metric_effects.items():  # (effects on metrics the catalog entries predate)
        if name not in by_name:
            raise CatalogError(f"observability.yaml: metric_effects for unknown fault {name!r}")
        f = by_name[name]
        for scope, chans in eff.items():
            dup = sorted(set(chans) & set(f.effects.get(scope, {})))
            if dup:
                raise CatalogError(f"observability.yaml: metric_effects.{name}.{scope} sets {dup}, which the catalog "
                                   f"entry already sets")
            f.effects = {**f.effects, scope: {**f.effects.get(scope, {}), **chans}}
        _validate_fault(f, tids)
    splits_doc = yaml.safe_load(raw_s)
    splits = splits_doc["splits"]
    for sname, sp in splits.items():
        bad = [x for x in sp.get("unknown", []) if x not in names]
        if bad or not sp.get("unknown"):
            raise CatalogError(f"splits.yaml: split {sname!r} holds out unknown fault name(s) {bad} (or none)")
    default_split = splits_doc.get("default", "handpicked")
    if default_split not in splits:
        raise CatalogError(f"splits.yaml: default split {default_split!r} is not one of {sorted(splits)}")
    return Catalog(faults=faults, templates=templates, alerts=alerts, actions=actions, sha256=sha, splits=splits,
                   default_split=default_split, observability=observability)


def _validate_fault(f: FaultSpec, tids: set[str]) -> None:
    where = f"fault {f.name!r}"
    kind = f.target.get("kind")
    if kind not in ("node", "service"):
        raise CatalogError(f"{where}: target.kind must be 'node' or 'service', got {kind!r}")
    for scope, chans in f.effects.items():
        node_scope = scope == "node_of_root" or (scope == "root" and kind == "node")
        valid = NODE_CHANNELS if node_scope else SVC_CHANNELS
        if scope not in ("root", "services_on_root", "node_of_root") and not scope.startswith("service:"):
            raise CatalogError(f"{where}: unknown effect scope {scope!r}")
        for ch in chans:
            if ch not in valid:
                raise CatalogError(f"{where}: effect channel {ch!r} in scope {scope!r} is not one of {list(valid)}")
    for entry in f.logs:
        if entry["t"] not in tids:
            raise CatalogError(f"{where}: unknown log template {entry['t']!r}")
    for cat, rem in f.remedies.items():
        if cat not in CATEGORY_INDEX:
            raise CatalogError(f"{where}: remedy for unknown category {cat!r}; categories: {list(CATEGORIES)}")
        if rem.get("effect") not in EFFECT_CODE:
            raise CatalogError(f"{where}: remedy {cat}.effect must be one of {list(EFFECTS)}")
    if not any(r.get("effect") == "heal" for r in f.remedies.values()):
        raise CatalogError(f"{where}: needs at least one remedy with effect 'heal'")


class CompiledCatalog:
    """Numpy tables of a :class:`Catalog` against a :class:`~ifshm_ray.sim.topology.Topology`."""

    def __init__(self, cat: Catalog, topo):
        self.cat, self.topo = cat, topo
        F, C, S = len(cat.faults), len(CATEGORIES), topo.S
        self.F = F
        self.onset = np.array([f.onset_s for f in cat.faults], dtype=np.float64)
        self.ramp = np.array([max(f.ramp_s, 1.0) for f in cat.faults], dtype=np.float64)
        self.freq = np.array([f.freq for f in cat.faults], dtype=np.float64)
        self.target_is_node = np.array([f.target["kind"] == "node" for f in cat.faults])
        self.effect = np.zeros((F, C), dtype=np.int64)
        self.tgt_spec = np.full((F, C), TGT_DEFAULT, dtype=np.int64)
        self.tgt_named = np.full((F, C), -1, dtype=np.int64)
        self.min_ratio = np.zeros((F, C))
        self.duration = np.zeros((F, C))
        self.recur = np.zeros((F, C))
        self.harm_mult = np.zeros((F, C))
        self.act_duration = np.array([cat.actions[c]["duration_s"] for c in CATEGORIES], dtype=np.float64)
        self.act_cost = np.array([cat.actions[c]["cost"] for c in CATEGORIES], dtype=np.float64)
        for i, f in enumerate(cat.faults):
            for cname, rem in f.remedies.items():
                c = CATEGORY_INDEX[cname]
                self.effect[i, c] = EFFECT_CODE[rem["effect"]]
                self.duration[i, c] = rem.get("duration_s", self.act_duration[c])
                self.min_ratio[i, c] = rem.get("min_ratio", 0.0)
                self.recur[i, c] = rem.get("recur_s", 0.0)
                self.harm_mult[i, c] = rem.get("penalty", 1.0) if rem["effect"] == "harm" else 0.0
                tgt = rem.get("target")
                if tgt is not None:
                    if tgt not in topo.svc_index:
                        raise CatalogError(f"fault {f.name!r}: remedy target {tgt!r} is not a service: {topo.services}")
                    self.tgt_spec[i, c] = TGT_NAMED
                    self.tgt_named[i, c] = topo.svc_index[tgt]
        # fault targets
        self.target_service = np.full(F, -1, dtype=np.int64)
        self.target_hosting = np.full(F, -1, dtype=np.int64)
        self.target_role = []
        for i, f in enumerate(cat.faults):
            t = f.target
            if t["kind"] == "service":
                if t["name"] not in topo.svc_index:
                    raise CatalogError(f"fault {f.name!r}: target service {t['name']!r} not in topology {topo.services}")
                self.target_service[i] = topo.svc_index[t["name"]]
                self.target_role.append(None)
            else:
                self.target_role.append(t.get("role", "gpu"))
                if t.get("hosting"):
                    self.target_hosting[i] = topo.svc_index[t["hosting"]]
        self.n_templates = len(cat.templates)
        self.max_logs = max(len(f.logs) for f in cat.faults)
        self.log_tid = np.full((F, self.max_logs), -1, dtype=np.int64)
        self.log_rate = np.zeros((F, self.max_logs))
        self.log_scope = [[e.get("at", "root") for e in f.logs] for f in cat.faults]
        for i, f in enumerate(cat.faults):
            for j, e in enumerate(f.logs):
                self.log_tid[i, j] = cat.template_index[e["t"]]
                self.log_rate[i, j] = e["rate"]

    def remedy_table(self, fault: int) -> list[dict]:
        """Heal remedies of a fault as dicts (category, target spec, min ratio, duration), fastest first."""
        out = []
        for c in range(len(CATEGORIES)):
            if self.effect[fault, c] == EFFECT_CODE["heal"]:
                out.append({"category": c, "spec": int(self.tgt_spec[fault, c]), "named": int(self.tgt_named[fault, c]),
                            "min_ratio": float(self.min_ratio[fault, c]), "duration": float(self.duration[fault, c])})
        return sorted(out, key=lambda r: r["duration"])


def ratio_level_for(min_ratio: float) -> int:
    """Smallest ratio level index whose multiplier is >= ``min_ratio`` (and > 1 for scale-ups)."""
    for i, r in enumerate(RATIO_LEVELS):
        if r >= max(min_ratio, 1.01):
            return i
    return len(RATIO_LEVELS) - 1


def default_target_kind(category: int) -> str:
    return CATEGORY_TARGET_KIND[CATEGORIES[category]]

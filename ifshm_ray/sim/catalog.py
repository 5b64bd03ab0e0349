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
# ramp shapes: progress g(x) of a fault's severity over its ramp, x in [0, 1] (see BatchedSim._severity)
RAMP_SHAPES = ("linear", "saturating", "accelerating")
# intermittent faults: "square" (symptoms on for a duty share of every period, off otherwise: link flaps, thermal
# throttling) or "sawtooth" (the ramp restarts every period: a leak that is OOMKilled and restarts)
FLAP_MODES = ("none", "square", "sawtooth")
# how a remedy fails when it fails (see BatchedSim.step): pdb_blocked (drain: the node is cordoned, evictions are
# refused and the pods stay), gpu_in_use (drain: the node is drained but the GPU reset is refused, the fault stays),
# migration_aborted (migrate: nothing moves), failed (the action runs, the fault stays)
FAIL_STATES = ("failed", "pdb_blocked", "gpu_in_use", "migration_aborted")
EFFECT_CODE = {e: i for i, e in enumerate(EFFECTS)}
# remedy target specifiers (resolved against the injected root at run time)
TGT_DEFAULT, TGT_ROOT, TGT_SERVICES_ON_ROOT, TGT_NODE_OF_ROOT, TGT_NAMED = range(5)
# The split of artifacts (policy bundles, encoder checkpoints) written before they recorded one: they were trained on
# the one fixed known set of that time, which is the `handpicked` split.
LEGACY_SPLIT = "handpicked"
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
    """One fault type. Whether it is known (trained on) depends on the named split (:meth:`Catalog.known_in`)."""
    name: str
    family: str
    freq: float
    description: str
    target: dict
    onset_s: float | list
    ramp_s: float | list
    effects: dict
    logs: list
    remedies: dict
    ramp_shape: str | list = "linear"
    severity: float | list = 1.0
    flap: dict | None = None
    recovery_tail_s: float | list | None = None
    self_heal_s: float | list | None = None


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
    dynamics: dict = field(default_factory=dict)
    splits: dict[str, dict] = field(default_factory=dict)
    """Named splits (``data/splits.yaml``): name -> ``{"description", "unknown": [names], ...}``, group splits
    resolved to their fault names."""
    default_split: str = "handpicked"
    """The split a job uses when its config names none (``SimConfig.split``'s default)."""
    groups: dict[str, dict] = field(default_factory=dict)
    """Groups of fault families for the leave-one-group-out splits: name -> ``{"description", "families"}``."""
    random_draw: dict = field(default_factory=dict)
    """How the random splits were drawn: ``{"seed", "command", "population"}`` (see :mod:`ifshm_ray.sim.splits`)."""
    fault_index: dict[str, int] = field(default_factory=dict)
    template_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.fault_index = {f.name: i for i, f in enumerate(self.faults)}
        self.template_index = {t.id: i for i, t in enumerate(self.templates)}

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.faults]

    def check_split(self, split: str) -> str:
        """``split`` if it is a named split, else :class:`CatalogError` with the names."""
        if split not in self.splits:
            raise CatalogError(f"unknown split {split!r}; named splits: {sorted(self.splits)}")
        return split

    def is_known(self, name: str, split: str) -> bool:
        """Whether fault type ``name`` is known (trained on) in ``split``."""
        self.spec(name)
        return name not in self.splits[self.check_split(split)]["unknown"]

    def unknown_in(self, split: str) -> list[str]:
        """Fault types held out in ``split`` (catalog order)."""
        held = set(self.splits[self.check_split(split)]["unknown"])
        return [n for n in self.names if n in held]

    def known_in(self, split: str) -> list[str]:
        """Fault types known (trained on) in ``split`` (catalog order)."""
        held = set(self.splits[self.check_split(split)]["unknown"])
        return [n for n in self.names if n not in held]

    def select(self, faults: str | list[str] | tuple[str, ...], split: str | None = None) -> list[str]:
        """Resolve 'known' | 'unknown' | 'all' (of ``split``) | list of names (or a comma-separated string) to fault
        names. 'known' and 'unknown' need ``split``: they are always some named split's."""
        if isinstance(faults, str):
            if faults in ("known", "unknown") and split is None:
                raise CatalogError(f"{faults!r} fault types of which split? pass split= (named splits: "
                                   f"{sorted(self.splits)})")
            if faults == "all":
                return self.names
            if faults in ("known", "unknown"):
                return self.known_in(split) if faults == "known" else self.unknown_in(split)
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
        if "known" in f:  # (the per-fault flag of earlier catalogs: known/unknown is now a named split's)
            raise CatalogError(f"fault entry {f.get('name', '?')!r}: 'known' is no longer a fault field; held-out types "
                               "are named by the splits in ifshm_ray/sim/data/splits.yaml")
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
    dynamics = c.get("dynamics") or {}
    for key in ("recovery_tail_s", "tail_cutoff"):
        if key not in dynamics:
            raise CatalogError(f"catalog 'dynamics' must give {key!r}")
    _range(dynamics["recovery_tail_s"], "dynamics.recovery_tail_s", lo=1.0)
    splits_doc = yaml.safe_load(raw_s) or {}
    groups, splits, default_split = _load_splits(splits_doc, faults)
    return Catalog(faults=faults, templates=templates, alerts=alerts, actions=actions, sha256=sha, splits=splits,
                   default_split=default_split, observability=observability, groups=groups, dynamics=dynamics,
                   random_draw=dict(splits_doc.get("random_draw") or {}))


_SPLIT_KEYS = {"description", "unknown", "holdout_group"}


def _load_splits(doc: dict, faults: list[FaultSpec]) -> tuple[dict, dict, str]:
    """Validate ``splits.yaml`` against the catalog; resolve group splits to fault names. Every split must hold out
    at least one type and keep at least one known."""
    names = [f.name for f in faults]
    families = {f.family for f in faults}
    where = "splits.yaml"
    groups = {}
    owner: dict[str, str] = {}
    for gname, g in (doc.get("groups") or {}).items():
        fams = list((g or {}).get("families") or [])
        if not fams:
            raise CatalogError(f"{where}: group {gname!r} lists no families")
        bad = [x for x in fams if x not in families]
        if bad:
            raise CatalogError(f"{where}: group {gname!r} names family(ies) {bad} that no catalog fault has; "
                               f"families: {sorted(families)}")
        for fam in fams:
            if fam in owner:
                raise CatalogError(f"{where}: family {fam!r} is in groups {owner[fam]!r} and {gname!r}")
            owner[fam] = gname
        groups[gname] = {"description": str(g.get("description", "")), "families": fams}
    raw = doc.get("splits") or {}
    if not raw:
        raise CatalogError(f"{where}: no splits")
    splits = {}
    for sname, sp in raw.items():
        sp = dict(sp or {})
        extra = sorted(set(sp) - _SPLIT_KEYS)
        if extra:
            raise CatalogError(f"{where}: split {sname!r}: unknown key(s) {extra}; allowed: {sorted(_SPLIT_KEYS)}")
        if not str(sp.get("description") or "").strip():
            raise CatalogError(f"{where}: split {sname!r} has no description")
        if ("unknown" in sp) == ("holdout_group" in sp):
            raise CatalogError(f"{where}: split {sname!r} must give exactly one of 'unknown' (fault names) or "
                               "'holdout_group' (a group name)")
        if "holdout_group" in sp:
            group = sp["holdout_group"]
            if group not in groups:
                raise CatalogError(f"{where}: split {sname!r}: holdout_group {group!r} is not one of {sorted(groups)}")
            held = [f.name for f in faults if f.family in groups[group]["families"]]
        else:
            held = list(sp["unknown"] or [])
            bad = [x for x in held if x not in names]
            if bad:
                raise CatalogError(f"{where}: split {sname!r} holds out unknown fault name(s) {bad}; valid: {names}")
            if len(set(held)) != len(held):
                raise CatalogError(f"{where}: split {sname!r} lists a fault type twice")
        if not held:
            raise CatalogError(f"{where}: split {sname!r} holds out no fault type")
        if len(set(held)) == len(names):
            raise CatalogError(f"{where}: split {sname!r} holds out every fault type: its known set is empty")
        splits[sname] = {**sp, "unknown": held}
    default_split = doc.get("default", "handpicked")
    if default_split not in splits:
        raise CatalogError(f"{where}: default split {default_split!r} is not one of {sorted(splits)}")
    return groups, splits, default_split


def _range(v, where: str, lo: float = 0.0, hi: float = float("inf")) -> tuple[float, float]:
    """A catalog range: a number (a fixed value) or [low, high] with lo <= low <= high <= hi."""
    if isinstance(v, bool):
        raise CatalogError(f"{where}: expected a number or [low, high], got {v!r}")
    if isinstance(v, (int, float)):
        a = b = float(v)
    elif isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                               for x in v):
        a, b = float(v[0]), float(v[1])
    else:
        raise CatalogError(f"{where}: expected a number or [low, high], got {v!r}")
    if not (lo <= a <= b <= hi):
        raise CatalogError(f"{where}: range [{a}, {b}] must satisfy {lo} <= low <= high <= {hi}")
    return a, b


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
        if "duration_s" in rem:
            _range(rem["duration_s"], f"{where}: remedy {cat}.duration_s")
        if "fail_prob" in rem:
            _range(rem["fail_prob"], f"{where}: remedy {cat}.fail_prob", hi=1.0)
            if rem.get("fail_state", "failed") not in FAIL_STATES:
                raise CatalogError(f"{where}: remedy {cat}.fail_state must be one of {list(FAIL_STATES)}")
    _range(f.onset_s, f"{where}: onset_s")
    _range(f.ramp_s, f"{where}: ramp_s")
    _range(f.severity, f"{where}: severity", lo=0.05, hi=2.0)
    shapes = [f.ramp_shape] if isinstance(f.ramp_shape, str) else list(f.ramp_shape)
    if not shapes or any(x not in RAMP_SHAPES for x in shapes):
        raise CatalogError(f"{where}: ramp_shape must be one or a list of {list(RAMP_SHAPES)}, got {f.ramp_shape!r}")
    if f.flap is not None:
        if f.flap.get("mode") not in FLAP_MODES[1:]:
            raise CatalogError(f"{where}: flap.mode must be one of {list(FLAP_MODES[1:])}")
        _range(f.flap.get("period_s"), f"{where}: flap.period_s", lo=1.0)
        _range(f.flap.get("duty", 1.0), f"{where}: flap.duty", lo=0.01, hi=1.0)
    if f.recovery_tail_s is not None:
        _range(f.recovery_tail_s, f"{where}: recovery_tail_s", lo=1.0)
    if f.self_heal_s is not None:
        _range(f.self_heal_s, f"{where}: self_heal_s", lo=1.0)
    if not any(r.get("effect") == "heal" for r in f.remedies.values()):
        raise CatalogError(f"{where}: needs at least one remedy with effect 'heal'")


class CompiledCatalog:
    """Numpy tables of a :class:`Catalog` against a :class:`~ifshm_ray.sim.topology.Topology`."""

    def __init__(self, cat: Catalog, topo):
        self.cat, self.topo = cat, topo
        F, C, S = len(cat.faults), len(CATEGORIES), topo.S
        self.F = F
        # per-episode draws (BatchedSim._draw_dynamics): every range as (low, high) columns
        rng_of = lambda v: _range(v, "")  # noqa: E731 (validated in load_catalog)
        self.onset_lh = np.array([rng_of(f.onset_s) for f in cat.faults], dtype=np.float64).reshape(F, 2)
        self.ramp_lh = np.maximum(np.array([rng_of(f.ramp_s) for f in cat.faults], dtype=np.float64).reshape(F, 2), 1.0)
        self.onset = self.onset_lh.mean(axis=1)  # (the midpoints: what a catalog reader expects on average)
        self.ramp = self.ramp_lh.mean(axis=1)
        self.sev_lh = np.array([rng_of(f.severity) for f in cat.faults], dtype=np.float64).reshape(F, 2)
        self.shapes = np.zeros((F, len(RAMP_SHAPES)), bool)  # allowed ramp shapes (drawn uniformly among them)
        for i, f in enumerate(cat.faults):
            for x in ([f.ramp_shape] if isinstance(f.ramp_shape, str) else f.ramp_shape):
                self.shapes[i, RAMP_SHAPES.index(x)] = True
        self.flap_mode = np.array([FLAP_MODES.index(f.flap["mode"]) if f.flap else 0 for f in cat.faults], np.int64)
        self.flap_period_lh = np.array([rng_of(f.flap["period_s"]) if f.flap else (1.0, 1.0) for f in cat.faults],
                                       dtype=np.float64).reshape(F, 2)
        self.flap_duty_lh = np.array([rng_of(f.flap.get("duty", 1.0)) if f.flap else (1.0, 1.0) for f in cat.faults],
                                     dtype=np.float64).reshape(F, 2)
        tail0 = rng_of(cat.dynamics.get("recovery_tail_s", 1.0))
        self.tail_lh = np.array([rng_of(f.recovery_tail_s) if f.recovery_tail_s is not None else tail0
                                 for f in cat.faults], dtype=np.float64).reshape(F, 2)
        self.tail_cutoff = float(cat.dynamics.get("tail_cutoff", 0.0))
        self.self_heal_lh = np.array([rng_of(f.self_heal_s) if f.self_heal_s is not None else (np.inf, np.inf)
                                      for f in cat.faults], dtype=np.float64).reshape(F, 2)
        self.freq = np.array([f.freq for f in cat.faults], dtype=np.float64)
        self.target_is_node = np.array([f.target["kind"] == "node" for f in cat.faults])
        self.effect = np.zeros((F, C), dtype=np.int64)
        self.tgt_spec = np.full((F, C), TGT_DEFAULT, dtype=np.int64)
        self.tgt_named = np.full((F, C), -1, dtype=np.int64)
        self.min_ratio = np.zeros((F, C))
        self.duration = np.zeros((F, C))  # (the midpoint of a drawn duration range)
        self.duration_lh = np.zeros((F, C, 2))
        self.fail_prob = np.zeros((F, C))
        self.fail_state = np.zeros((F, C), np.int64)
        self.recur = np.zeros((F, C))
        self.harm_mult = np.zeros((F, C))
        self.act_duration = np.array([cat.actions[c]["duration_s"] for c in CATEGORIES], dtype=np.float64)
        self.act_cost = np.array([cat.actions[c]["cost"] for c in CATEGORIES], dtype=np.float64)
        # a category's duration per target service (actions.<category>.by_service, a range drawn per action; the
        # category's duration_s elsewhere); act_dur_ranged [C, S]: where it is a range
        self.act_dur_lh = np.repeat(self.act_duration[:, None, None], S, axis=1).repeat(2, axis=2)
        for cname, a in cat.actions.items():
            for svc, v in (a.get("by_service") or {}).items():
                if CATEGORY_TARGET_KIND[cname] != "service" or svc not in topo.svc_index:
                    raise CatalogError(f"catalog actions.{cname}.by_service: {svc!r} is not a service target of "
                                       f"{cname!r} (services: {topo.services})")
                self.act_dur_lh[CATEGORY_INDEX[cname], topo.svc_index[svc]] = _range(v, f"actions.{cname}.by_service")
        self.act_dur_ranged = self.act_dur_lh[:, :, 1] > self.act_dur_lh[:, :, 0]
        for i, f in enumerate(cat.faults):
            for cname, rem in f.remedies.items():
                c = CATEGORY_INDEX[cname]
                self.effect[i, c] = EFFECT_CODE[rem["effect"]]
                svc = topo.svc_index.get(rem.get("target") or (f.target.get("name") if f.target["kind"] == "service"
                                                                 else None), -1)
                default = tuple(self.act_dur_lh[c, svc]) if svc >= 0 else self.act_duration[c]
                self.duration_lh[i, c] = _range(rem.get("duration_s", list(default) if svc >= 0 else default), "")
                self.duration[i, c] = self.duration_lh[i, c].mean()
                self.fail_prob[i, c] = rem.get("fail_prob", 0.0)
                self.fail_state[i, c] = FAIL_STATES.index(rem.get("fail_state", "failed"))
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


def expected_remedy_s(rem: dict, default_s: float) -> float:
    """Expected seconds a remedy takes until it works: the mean of its drawn duration over the expected number of
    attempts, 1 / (1 - fail_prob) (each attempt fails independently; a failed attempt takes as long)."""
    lo, hi = _range(rem.get("duration_s", default_s), "duration_s")
    p = float(rem.get("fail_prob", 0.0))
    return (lo + hi) / 2.0 / max(1.0 - p, 1e-9)


def ratio_level_for(min_ratio: float) -> int:
    """Smallest ratio level index whose multiplier is >= ``min_ratio`` (and > 1 for scale-ups)."""
    for i, r in enumerate(RATIO_LEVELS):
        if r >= max(min_ratio, 1.01):
            return i
    return len(RATIO_LEVELS) - 1


def default_target_kind(category: int) -> str:
    return CATEGORY_TARGET_KIND[CATEGORIES[category]]

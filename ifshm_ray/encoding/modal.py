"""Modal-aware encoding of one telemetry window (``ifshm_ray.telemetry`` schema) into one context.

Pure Python + numpy + drain3 (no torch, no ray). :class:`ModalEncoder` turns

* **logs** into templates with a deterministic, in-memory Drain3 ``TemplateMiner`` (level and logger are kept as
  the first tokens, ids / numbers / addresses / paths are masked first), with a count per template and the most
  informative raw lines (severe and rare first);
* **metrics** into scale-free per-entity features (shift of the window's tail against its head as a z-score,
  relative change, trend, level) pooled per metric name into hash buckets, and a short textual summary
  ("inference-server latency_p99_ms rising 112 -> 480 (z=6.2)");
* **alarms** into names and severities (hash buckets weighted by severity, counts per severity, and one text item
  per distinct alarm);

and joins them in an :class:`EncodedContext`: a bounded text prompt (token budget from the config), the list of
distinct template / alarm texts with counts (what the template-level LM path embeds), and a fixed-size numeric
feature vector (whose learned projection the semantic encoder adds to the LM output).
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ifshm_ray.encoding.config import EncoderConfig

LEVELS = ("DEBUG", "INFO", "LOG", "WARNING", "ERROR", "CRITICAL")
LEVEL_WEIGHT = {"DEBUG": 0.0, "INFO": 0.5, "LOG": 1.0, "WARNING": 2.0, "ERROR": 3.0, "CRITICAL": 4.0}
_LEVEL_ALIASES = {"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "CRITICAL", "ERR": "ERROR", "CRIT": "CRITICAL",
                  "I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL", "NOTICE": "INFO"}
SEVERITY_WEIGHT = {"info": 1.0 / 3.0, "warning": 2.0 / 3.0, "critical": 1.0}
METRIC_STATS = ("shift_z", "rel_change", "level_max", "level_mean")
N_LOG_FEATURES = 9
N_ALARM_EXTRA = 5

_TS = r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
_OSLO = re.compile(rf"^{_TS}\s+(?:\d+\s+)?(?P<level>[A-Z]+)\s+(?P<logger>\S+)\s?(?P<rest>.*)$")
_GLOG = re.compile(r"^(?:\[rank\d+\]:)?\[(?P<level>[IWEF])\d{4} [\d:.]+ (?:\d+ )?(?P<logger>[^\]]*)\]\s*(?P<rest>.*)$")
_COLLECTOR = re.compile(rf"^{_TS}\s+(?P<host>[\w.\-]+)\s+(?P<source>[\w.\-]+):\s(?P<rest>.*)$")
_LEAD_TS = re.compile(rf"^\[?{_TS}\]?\s*|^\[\s*\d+\.\d+\]\s*|^[A-Z][a-z]{{2}}\s+\d+\s+\d{{2}}:\d{{2}}:\d{{2}}\s+\S+\s+")
_LEVEL_WORD = re.compile(r"\b(TRACE|DEBUG|INFO|NOTICE|WARN(?:ING)?|ERR(?:OR)?|CRIT(?:ICAL)?|FATAL)\b")
_REQ_CTX = re.compile(r"^\[(?:req-|None req-)[^\]]*\]\s*")
_BAD_WORDS = re.compile(r"error|exception|fail|fatal|timeout|timed out|refused|denied|unreachable|panic|oom|"
                        r"out of memory|killed|traceback|unavailable|crash|corrupt|lost|degraded|not found",
                        re.IGNORECASE)
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
MASKS: tuple[tuple[str, str], ...] = (
    (rf"req-{_UUID}", "REQ"),
    (_UUID, "UUID"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "IP"),
    (r"\b0x[0-9a-fA-F]+\b", "HEX"),
    (r"\b[0-9a-fA-F]{16,}\b", "HEX"),
    (r"(?:/[\w.\-]+){2,}/?", "PATH"),
    (r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", "NUM"),
)


def stable_hash(text: str, buckets: int) -> int:
    """Bucket of ``text`` that is the same in every process (CRC32, not Python's salted ``hash``)."""
    return zlib.crc32(text.encode("utf-8")) % buckets


def parse_line(line: str) -> tuple[str, str, str]:
    """Split a raw log line into ``(level, component, message)``; timestamps, pids and request contexts go.

    Understands a log shipper's ``<ts> <host> <source>: `` prefix (host dropped, source kept as component when the
    line itself names none), oslo.log (OpenStack), glog/PyTorch (``[rank0]:[E1128 ...] file.cpp:607] ...``), kernel and syslog
    prefixes; anything else keeps its text, with a level taken from a level word near the start (``LOG`` if none).
    """
    line = line.rstrip("\n")
    m = _COLLECTOR.match(line)
    if m:  # "<ts> <host> <source>: <original line>" (a log shipper's prefix): parse the original line
        level, comp, msg = parse_line(m.group("rest"))
        return level, comp or m.group("source"), msg
    m = _OSLO.match(line)
    if m and (m.group("level") in LEVEL_WEIGHT or m.group("level") in _LEVEL_ALIASES):
        level = _LEVEL_ALIASES.get(m.group("level"), m.group("level"))
        return level, m.group("logger"), _REQ_CTX.sub("", m.group("rest"))
    m = _GLOG.match(line)
    if m:
        return _LEVEL_ALIASES[m.group("level")], m.group("logger").split(" ")[-1], m.group("rest")
    rest = line
    for _ in range(2):
        rest = _LEAD_TS.sub("", rest)
    level = "LOG"
    m = _LEVEL_WORD.search(rest[:48])
    if m:
        word = m.group(1)
        level = _LEVEL_ALIASES.get(word, word)
        if level not in LEVEL_WEIGHT:
            level = "LOG"
    return level, "", rest.strip()


@dataclass
class EncodedContext:
    """One telemetry window after modal-aware encoding."""

    prompt: str
    """Bounded text prompt (alarms, metric summary, templates with counts, key lines): what the LM sees in
    ``context`` mode."""
    items: list[str]
    """Distinct log templates and alarm texts (most informative first): what the LM embeds in ``templates`` mode."""
    counts: np.ndarray
    """Occurrences of each item in the window (float32, same length as ``items``)."""
    kinds: list[str]
    """``"log"`` or ``"alarm"`` per item."""
    features: np.ndarray
    """Fixed-size numeric vector (float32): log levels, metric features per metric-name bucket, alarms."""
    template_counts: dict[str, int] = field(default_factory=dict)
    """Every log template of the window with its count (the baseline's input)."""
    metric_summary: list[str] = field(default_factory=list)
    key_lines: list[str] = field(default_factory=list)
    entity_features: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-service / per-node vector (metric-name buckets x :data:`METRIC_STATS`)."""

    def to_record(self) -> dict:
        """JSON/Parquet-friendly dict (lists instead of arrays)."""
        return {"prompt": self.prompt, "items": list(self.items), "counts": [float(c) for c in self.counts],
                "kinds": list(self.kinds), "features": [float(x) for x in self.features],
                "template_counts": dict(self.template_counts)}

    @classmethod
    def from_record(cls, rec: dict) -> "EncodedContext":
        tc = rec.get("template_counts") or {}
        if isinstance(tc, list):  # pyarrow maps come back as lists of pairs
            tc = dict(tc)
        return cls(prompt=rec["prompt"], items=list(rec["items"]), counts=np.asarray(rec["counts"], np.float32),
                   kinds=list(rec["kinds"]), features=np.asarray(rec["features"], np.float32),
                   template_counts={k: int(v) for k, v in tc.items()})


def _approx_tokens(text: str) -> int:
    return len(text) // 4 + 1


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def metric_stats(values: Sequence[float]) -> tuple[float, float, float, float] | None:
    """Scale-free statistics of one metric series: (shift z-score of the tail against the head, relative change,
    signed log level of the last value, the tail mean). None for an empty series."""
    if len(values) == 0:
        return None
    z, rel, level, _, tail = _metric_stats_batch([values])[0]
    return float(z), float(rel), float(level), float(tail)


def _metric_stats_batch(series: list[Sequence[float]]) -> np.ndarray:
    """[N, 5] = (z, rel, level, head mean, tail mean) per non-empty series; series of equal length go together.
    Head: the first half of the window; tail: its last quarter; z = (tail - head) / (std(head) + 5% |head|)."""
    out = np.zeros((len(series), 5), np.float64)
    by_len: dict[int, list[int]] = {}
    for i, v in enumerate(series):
        by_len.setdefault(len(v), []).append(i)
    for n, idx in by_len.items():
        v = np.asarray([series[i] for i in idx], np.float64)
        head = v[:, : max(1, n // 2)]
        tail = v[:, -max(1, n // 4):]
        mu, sd, tm = head.mean(1), head.std(1), tail.mean(1)
        z = np.clip((tm - mu) / (sd + 0.05 * np.abs(mu) + 1e-6), -20, 20)
        rel = np.clip((tm - mu) / (np.abs(mu) + 1e-6), -10, 10)
        last = v[:, -1]
        out[idx] = np.stack([z, rel, np.sign(last) * np.log1p(np.abs(last)), mu, tm], axis=1)
    return out


class ModalEncoder:
    """Telemetry window -> :class:`EncodedContext`. Holds the Drain3 miner, so templates are shared across windows.

    ``learn=True`` (default) lets the miner add and generalise templates; :meth:`freeze` switches to matching only
    (templates then never change, e.g. during RL after fine-tuning). ``count_tokens`` measures the prompt budget
    (the LM tokenizer's count; ~4 characters per token if not given).
    """

    def __init__(self, config: EncoderConfig | None = None, count_tokens: Callable[[str], int] | None = None):
        self.config = (config or EncoderConfig()).validate()
        self.count_tokens = count_tokens or _approx_tokens
        self.learn = True
        self.miner = self._new_miner(None)
        self.lines_seen = 0

    # ----- template miner -------------------------------------------------------------------------------------
    def _miner_config(self):
        from drain3.masking import MaskingInstruction
        from drain3.template_miner_config import TemplateMinerConfig

        c = TemplateMinerConfig()
        c.drain_sim_th = self.config.drain_sim_th
        c.drain_depth = self.config.drain_depth
        c.drain_max_clusters = self.config.drain_max_clusters
        c.masking_instructions = [MaskingInstruction(p, m) for p, m in MASKS]
        c.parametrize_numeric_tokens = True
        c.profiling_enabled = False
        c.snapshot_compress_state = True
        return c

    def _new_miner(self, state: bytes | None):
        from drain3 import TemplateMiner
        from drain3.memory_buffer_persistence import MemoryBufferPersistence

        if state is None:
            return TemplateMiner(None, self._miner_config())
        p = MemoryBufferPersistence()
        p.state = state
        miner = TemplateMiner(p, self._miner_config())
        miner.persistence_handler = None
        return miner

    def miner_state(self) -> bytes:
        """The miner's templates as bytes (Drain3's own snapshot format), for :meth:`load_miner_state`."""
        from drain3.memory_buffer_persistence import MemoryBufferPersistence

        p = MemoryBufferPersistence()
        self.miner.persistence_handler = p
        try:
            self.miner.save_state("checkpoint")
        finally:
            self.miner.persistence_handler = None
        return p.state

    def load_miner_state(self, state: bytes) -> None:
        self.miner = self._new_miner(state)

    def freeze(self) -> "ModalEncoder":
        """Match against known templates only (a line that matches none keeps its masked text as template)."""
        self.learn = False
        return self

    @property
    def num_templates(self) -> int:
        return len(self.miner.drain.clusters)

    def _templates(self, lines: Sequence[str]):
        """Per window: template text -> (count, level, first raw line, severity score)."""
        parsed = []
        self._level_counts = dict.fromkeys(LEVELS, 0)
        self._tracebacks = 0
        for raw in lines:
            level, comp, msg = parse_line(raw)
            self._level_counts[level] += 1
            self._tracebacks += msg.startswith("Traceback")
            text = f"{level} {comp} {msg}" if comp else f"{level} {msg}"
            if self.learn:
                cid = self.miner.add_log_message(text)["cluster_id"]
            else:
                cluster = self.miner.match(text, full_search_strategy="fallback")
                cid = cluster.cluster_id if cluster is not None else ("masked", self.miner.masker.mask(text))
            parsed.append((cid, level, raw, msg))
        self.lines_seen += len(lines)
        out: dict[str, list] = {}
        id_to_cluster = self.miner.drain.id_to_cluster
        for cid, level, raw, msg in parsed:
            if isinstance(cid, tuple):
                template, size = cid[1], 1
            else:
                cluster = id_to_cluster.get(cid)
                template, size = (cluster.get_template(), cluster.size) if cluster is not None else (msg, 1)
            entry = out.get(template)
            if entry is None:
                out[template] = [1, level, raw, size, msg]
            else:
                entry[0] += 1
        return out

    # ----- the three modalities --------------------------------------------------------------------------------
    def _log_part(self, lines: Sequence[str]):
        cfg = self.config
        per_template = self._templates(lines)
        total = max(self.lines_seen, 1)
        scored = []
        for template, (count, level, raw, size, msg) in per_template.items():
            kw = 1.0 if _BAD_WORDS.search(msg) else 0.0
            rarity = 0.5 * math.log((total + 1.0) / (size + 1.0))
            scored.append((LEVEL_WEIGHT.get(level, 1.0) + kw + rarity, count, template, raw, level))
        scored.sort(key=lambda s: (-s[0], -s[1], s[2]))
        level_counts, tracebacks = self._level_counts, self._tracebacks
        log_feats = [math.log1p(level_counts[lv]) for lv in LEVELS] + [
            math.log1p(len(lines)), math.log1p(len(per_template)), math.log1p(tracebacks)]
        key_lines = []
        for s in scored:
            if len(key_lines) >= cfg.max_key_lines:
                break
            if s[4] in ("LOG", "INFO", "DEBUG") and s[0] < 2.0:
                continue
            key_lines.append(s[3][: cfg.max_line_chars])
        template_counts = {t: v[0] for t, v in per_template.items()}
        return scored, log_feats, key_lines, template_counts

    def _metric_part(self, metrics: dict):
        cfg = self.config
        nb, ns = cfg.metric_buckets, len(METRIC_STATS)
        keys, series = [], []
        for entity in sorted(metrics):
            for name in sorted(metrics[entity]):
                if len(metrics[entity][name]):
                    keys.append((entity, name))
                    series.append(metrics[entity][name])
        stats = _metric_stats_batch(series)  # [N, 5]: z, rel, level, head mean, tail mean
        agg = np.zeros((nb, ns), np.float32)
        seen = np.zeros(nb, np.int32)
        entity_features: dict[str, np.ndarray] = {e: np.zeros(nb * ns, np.float32) for e in metrics}
        notes = []
        for (entity, name), (z, rel, level, head, tail) in zip(keys, stats):
            b = stable_hash(name, nb)
            entity_features[entity][b * ns:(b + 1) * ns] = (z, rel, level, level)
            if seen[b] == 0 or abs(z) > abs(agg[b, 0]):
                agg[b, 0] = z
            if seen[b] == 0 or abs(rel) > abs(agg[b, 1]):
                agg[b, 1] = rel
            agg[b, 2] = level if seen[b] == 0 else max(agg[b, 2], level)
            agg[b, 3] += level
            seen[b] += 1
            if (abs(z) >= 3.0 and abs(rel) >= 0.1) or abs(rel) >= 0.5:
                word = "rising" if tail > head else "falling"
                notes.append((abs(z) + abs(rel), f"{entity} {name} {word} {_fmt(head)} -> {_fmt(tail)} (z={z:.1f})"))
        agg[:, 3] /= np.maximum(seen, 1)
        notes.sort(key=lambda n: (-n[0], n[1]))
        summary = [n[1] for n in notes[: cfg.max_metric_lines]]
        if not summary:
            summary = ["no metric moved beyond its window baseline" if metrics else "no metrics"]
        return agg.reshape(-1), summary, entity_features

    def _alarm_part(self, alarms: list[dict]):
        nb = self.config.alarm_buckets
        vec = np.zeros(nb + N_ALARM_EXTRA, np.float32)
        items: dict[str, int] = {}
        lines = []
        sev_rank = {"critical": 0, "warning": 1, "info": 2}
        for a in sorted(alarms, key=lambda a: (sev_rank.get(a.get("severity", "warning"), 1), a["name"])):
            sev = a.get("severity", "warning")
            state = a.get("state", "firing")
            b = stable_hash(a["name"], nb)
            vec[b] = max(vec[b], SEVERITY_WEIGHT.get(sev, 0.5))
            vec[nb + ("info", "warning", "critical").index(sev)] += 1
            vec[nb + 3 + (0 if state == "firing" else 1)] += 1
            text = f"ALARM {sev} {a['name']}"
            items[text] = items.get(text, 0) + 1
            where = f" on {a['entity']}" if a.get("entity") else ""
            active = f", {a['active_for_s']:.0f}s" if isinstance(a.get("active_for_s"), (int, float)) else ""
            lines.append(f"{sev} {a['name']}{where} [{state}{active}]")
        vec[nb:] = np.log1p(vec[nb:])
        return vec, items, lines

    # ----- the whole context -----------------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        c = self.config
        return N_LOG_FEATURES + c.metric_buckets * len(METRIC_STATS) + c.alarm_buckets + N_ALARM_EXTRA

    def encode(self, telemetry: dict) -> EncodedContext:
        """Encode one telemetry window (see :mod:`ifshm_ray.telemetry`)."""
        cfg = self.config
        logs = telemetry.get("logs") or []
        scored, log_feats, key_lines, template_counts = self._log_part(logs)
        metric_vec, metric_summary, entity_features = self._metric_part(telemetry.get("metrics") or {})
        alarm_vec, alarm_items, alarm_lines = self._alarm_part(telemetry.get("alarms") or [])
        features = np.concatenate([np.asarray(log_feats, np.float32), metric_vec, alarm_vec]).astype(np.float32)

        items, counts, kinds = [], [], []
        for text, n in alarm_items.items():
            items.append(text)
            counts.append(n)
            kinds.append("alarm")
        for _, count, template, _, _ in scored:
            if len(items) >= cfg.max_templates:
                break
            items.append(template)
            counts.append(count)
            kinds.append("log")

        prompt = self._prompt(alarm_lines, metric_summary, scored, key_lines)
        return EncodedContext(prompt=prompt, items=items, counts=np.asarray(counts, np.float32), kinds=kinds,
                              features=features, template_counts=template_counts, metric_summary=metric_summary,
                              key_lines=key_lines, entity_features=entity_features)

    #: Share of the prompt's token budget each section may use at most (templates get what is left too).
    SECTION_SHARE = {"alarms": 0.2, "metrics": 0.25, "templates": 1.0, "key_lines": 1.0}

    def _prompt(self, alarm_lines, metric_summary, scored, key_lines) -> str:
        total = self.config.max_prompt_tokens - 8
        out: list[str] = []
        used = 0

        def section(name: str, header: str, lines: list[str]) -> None:
            nonlocal used
            cap = min(total, used + int(self.SECTION_SHARE[name] * total))
            cost = self.count_tokens(header + "\n")
            if used + cost > cap:
                return
            out.append(header)
            used += cost
            for line in lines:
                cost = self.count_tokens(line + "\n")
                if used + cost > cap:
                    break
                out.append(line)
                used += cost

        section("alarms", f"Alarms ({len(alarm_lines)}):" if alarm_lines else "Alarms: none",
                [f"- {x}" for x in alarm_lines])
        section("metrics", "Metrics:", [f"- {x}" for x in metric_summary])
        if scored:
            section("templates", f"Log templates ({len(scored)}, count x template):",
                    [f"- {s[1]}x {s[2][: self.config.max_line_chars]}" for s in scored[: self.config.max_templates]])
        else:
            section("templates", "Logs: none", [])
        if key_lines:
            section("key_lines", "Key lines:", [f"- {x}" for x in key_lines])
        return "\n".join(out)


def template_count_vector(ctx: EncodedContext, buckets: int = 256) -> np.ndarray:
    """Hashed log1p counts of every log template of a window (the baseline's log features)."""
    vec = np.zeros(buckets, np.float32)
    for template, n in ctx.template_counts.items():
        vec[stable_hash(template, buckets)] += n
    return np.log1p(vec)

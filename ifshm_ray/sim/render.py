"""Raw telemetry of one simulated cluster: log lines rendered from templates, metric windows, alarms; and the
log-template miner that turns rendered lines back into template counts (the numeric observation uses those
counts, mined from text, never the simulator's internal fault state)."""
from __future__ import annotations

import _random
import operator
import random
import re
import string

import numpy as np

from ifshm_ray.sim import rng
from ifshm_ray.sim.core import GPU_ONLY, METRIC_DECIMALS, NODE_METRICS, P_WINDOW, SVC_METRICS, BatchedSim
from ifshm_ray.telemetry import SCHEMA

EPOCH_DAY = "2026-11-28"
_PCI_BUSES = ("07", "0f", "47", "4e", "87", "90", "b7", "bd")


def _clock(sec: float) -> str:
    """hh:mm:ss.mmm of ``sec`` seconds of the day (negative times read 00:00:00.000)."""
    if sec < 0.0:
        sec = 0.0
    s = int(sec)
    hms = _HMS.get(s)
    if hms is None:  # (the lines of a window fall in a few whole seconds: their hh:mm:ss is formatted once)
        hms = _hms(s)
    return hms + _MS[int((sec - s) * 1000)]


def _hms(s: int) -> str:
    """'hh:mm:ss.' of whole second ``s`` of the day, kept in :data:`_HMS`."""
    if len(_HMS) >= 4096:
        _HMS.clear()
    hms = _HMS[s] = "%02d:%02d:%02d." % (s // 3600 % 24, s // 60 % 60, s % 60)
    return hms


_HMS: dict[int, str] = {}
_MS = ["%03d" % i for i in range(1000)]  # (sec - s < 1, so the milliseconds are 0..999)


# Generators of template field values: (rng, svc, dep, node, t, clock) -> str, where t is the line's time of day in
# seconds and clock its formatted time. ``r._randbelow(n)`` is what ``randrange``/``choice`` call internally; calling
# it directly draws exactly the same numbers without their argument checking (a third of the rendering time).
def _uuid(r: random.Random, *_) -> str:
    h = "%032x" % r.getrandbits(128)
    return f"{r._randbelow(10)}{h[1:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _randint_field(lo: int, hi: int):
    """A field holding a uniform integer in [lo, hi) (``str(r.randrange(lo, hi))``)."""
    width = hi - lo
    return lambda r, *_: str(lo + r._randbelow(width))


_FIELD_GEN = {
    "svc": lambda r, svc, dep, node, t, clock: svc,
    "dep": lambda r, svc, dep, node, t, clock: dep,
    "node": lambda r, svc, dep, node, t, clock: node,
    "d": lambda *_: EPOCH_DAY,
    "t": lambda r, svc, dep, node, t, clock: clock,
    "req": _uuid, "inst": _uuid, "vol": _uuid,
    "hex": lambda r, *_: f"{r._randbelow(10)}{r.getrandbits(36):09x}",
    "pod": lambda r, svc, *_: f"{svc}-{r.getrandbits(28):07x}{r._randbelow(10)}-{r._randbelow(10)}x{r.getrandbits(12):03x}",
    "pci": lambda r, *_: f"0000:{_PCI_BUSES[r._randbelow(len(_PCI_BUSES))]}:00",
    "up": lambda r, svc, dep, node, t, clock: f"{100000 + t + r.random():.6f}",
    "rank": _randint_field(0, 8),
    "pid": _randint_field(1000, 40000),
    "f": lambda r, *_: f"{0.1 + (30 - 0.1) * r.random():.2f}",  # r.uniform(0.1, 30)
    "ms": _randint_field(5, 3000),
}
_NUMERIC_FIELD = _randint_field(1, 2000)  # n, m and any other field: a small integer
# ``random.Random(x)`` for an int x >= 0 is a fresh instance seeded by the C seed (the Python-level ``seed`` only
# checks the type and resets the Gaussian cache, which nothing here draws from); reseeding one instance through it
# gives the same state without building an instance and its Python-level checks every window
_seed = _random.Random.seed


class Renderer:
    """Renders env ``b`` of a :class:`BatchedSim` to the telemetry schema of :mod:`ifshm_ray.telemetry`."""

    def __init__(self, sim: BatchedSim, start_hour: float = 9.0):
        self.sim = sim
        self.topo = sim.topo
        self.templates = sim.catalog.templates
        self.offset = start_hour * 3600.0
        self.ips = [f"10.20.{i // 8}.{10 + i}" for i in range(self.topo.N)]
        ips = self.ips
        self._gens = {**_FIELD_GEN, "ip": lambda r, *_: ips[r._randbelow(len(ips))]}
        self._rand = random.Random()  # (reseeded for every window: see log_lines)
        # per template: a function (rng, svc, dep, node, time of day, clock) -> the whole log line
        self._compiled = [self._compile(t) for t in self.templates]
        # emitting service index -> (name, impaired dependency); index -1 (no service: a kernel line) is the last
        topo = self.topo
        self._svc_name = list(topo.services) + ["kernel"]
        self._dep_name = [topo.services[int(np.argmax(topo.dep[s]))] if topo.dep[s].any() else "object-storage"
                          for s in range(topo.S)] + ["object-storage"]
        W = sim.cfg.window_samples
        self._w = np.linspace(0.0, 1.0, W)[None, :]
        self._1mw = 1 - self._w
        # metric windows: the series of the flattened [service metrics, node metrics] that the telemetry reports
        # (nodes without GPUs report no GPU metrics), and per entity its metric names and its rows of the series
        Ms, Mn = len(SVC_METRICS), len(NODE_METRICS)
        self._noise_shape = (topo.S * Ms + topo.N * Mn, W - 1)
        self._noise_n = self._noise_shape[0] * self._noise_shape[1]
        self._noise_scale, self._noise_shift = 0.02 * 3 ** 0.5, 1.0 - 0.01 * 3 ** 0.5
        series, self._entities = [], []
        for i, name in enumerate(topo.services):
            self._entities.append((name, SVC_METRICS, len(series), len(series) + Ms))
            series += range(i, topo.S * Ms, topo.S)  # (the flat metrics are metric-major: see BatchedSim._obs_views)
        for i, (name, gpu) in enumerate(zip(topo.nodes, sim.gpu_node.tolist())):
            keep = [j for j, m in enumerate(NODE_METRICS) if gpu or m not in GPU_ONLY]
            self._entities.append((name, tuple(NODE_METRICS[j] for j in keep), len(series), len(series) + len(keep)))
            series += [topo.S * Ms + j * topo.N + i for j in keep]
        self._series = np.array(series, np.int64)
        # the window as one flat array [series x W] in that order (equal shapes throughout: numpy is several times
        # faster than on broadcast or strided operands at these sizes): per position its series' row of the flat
        # metrics, its interpolation weights, and its noise number (u[row, j] of the [rows, W - 1] draw) with the
        # noise's scale and shift; the last sample (the scrape itself) has scale 0 and shift 1, a factor of exactly 1
        n_ser = len(series)
        j = np.tile(np.arange(W), n_ser)
        self._win_rows = np.repeat(self._series, W)
        self._win_w = np.tile(self._w[0], n_ser)
        self._win_1mw = np.tile(self._1mw[0], n_ser)
        self._win_noise = self._win_rows * (W - 1) + np.minimum(j, W - 2)
        last = j == W - 1
        self._win_scale = np.where(last, 0.0, self._noise_scale)
        self._win_shift = np.where(last, 1.0, self._noise_shift)
        self._metric_dicts = self._compile_metric_dicts()

    def _compile_metric_dicts(self) -> callable:
        """A function of the window's series (a list of ``W``-sample lists, in ``self._series`` order, as
        ``ndarray.tolist`` of the [series, W] window builds them in C) that returns ``{entity: {metric: [W
        samples]}}``: one dict display with constant keys and constant indices (generated once, as :meth:`_compile`
        does), much cheaper than slicing a flat list per series or ``dict(zip(...))``."""
        ents = []
        for name, metric_names, lo, hi in self._entities:
            items = ", ".join(f"{m!r}: f[{lo + i}]" for i, m in enumerate(metric_names))
            ents.append(f"{name!r}: {{{items}}}")
        ns: dict = {}
        exec("def metric_dicts(f):\n    return {%s}" % ", ".join(ents), ns)  # noqa: S102 (names from the topology)
        return ns["metric_dicts"]

    def _gen(self, name: str):
        return self._gens.get(name, _NUMERIC_FIELD)

    # fields whose value is an argument of the line function (no random draw)
    _ARG_FIELDS = {"svc": "svc", "dep": "dep", "node": "node", "t": "clock", "d": "D"}

    def _inline_field(self, f: str, v: str) -> list[str] | None:
        """Statements that set ``v`` to field ``f``'s value drawing exactly what its :data:`_FIELD_GEN` generator
        draws from ``r`` (through ``g = r.getrandbits`` and ``rnd = r.random``), with ``_randbelow`` unrolled as
        CPython's ``_randbelow_with_getrandbits`` does it (``k = n.bit_length()`` bits, redrawn while >= n);
        ``None`` for a field left to its generator (or a Python whose ``Random`` draws integers another way)."""
        if random.Random._randbelow is not random.Random._randbelow_with_getrandbits:
            return None

        def below(x: str, n: int) -> list[str]:  # x = r._randbelow(n)
            k = n.bit_length()
            return [f"{x} = g({k})", f"while {x} >= {n}: {x} = g({k})"]

        ints = {"rank": (0, 8), "pid": (1000, 40000), "ms": (5, 3000)}
        if f in ("req", "inst", "vol"):  # _uuid
            return ([f"h = '%032x' % g(128)"] + below("a", 10)
                    + [f"{v} = f'{{a}}{{h[1:8]}}-{{h[8:12]}}-{{h[12:16]}}-{{h[16:20]}}-{{h[20:32]}}'"])
        if f == "hex":
            return below("a", 10) + [f"{v} = f'{{a}}{{g(36):09x}}'"]
        if f == "pod":
            return (["h = g(28)"] + below("a", 10) + below("b", 10)
                    + [f"{v} = f'{{svc}}-{{h:07x}}{{a}}-{{b}}x{{g(12):03x}}'"])
        if f == "pci":
            return below("a", len(_PCI_BUSES)) + [f"{v} = f'0000:{{PCI[a]}}:00'"]
        if f == "ip":
            return below("a", len(self.ips)) + [f"{v} = IPS[a]"]
        if f == "up":
            return [f"{v} = f'{{100000 + t + rnd():.6f}}'"]
        if f == "f":
            return [f"{v} = f'{{0.1 + (30 - 0.1) * rnd():.2f}}'"]
        if f in _FIELD_GEN:
            if f not in ints:
                return None
            lo, hi = ints[f]
        else:  # _NUMERIC_FIELD
            lo, hi = 1, 2000
        return below("a", hi - lo) + [f"{v} = str({lo} + a)"]

    def _compile(self, tpl) -> callable:
        """The line function of ``tpl``: draws the template's random fields from ``r`` in field order (as
        :meth:`_fields` does, the same numbers: tested) and concatenates '<day>T<clock>Z <node> <source>: <body>'.
        Generated once per template (like ``collections.namedtuple``), with the draws written out inline, so a line
        costs no dict, no format parsing, no generic calls."""
        names = {"D": EPOCH_DAY, "PCI": _PCI_BUSES, "IPS": self.ips}
        code = ["def line(r, svc, dep, node, t, clock):", "    g, rnd = r.getrandbits, r.random"]
        var = {}
        for i, f in enumerate(tpl.fields):
            if f in self._ARG_FIELDS:
                var[f] = self._ARG_FIELDS[f]
                continue
            var[f] = f"v{i}"
            stmts = self._inline_field(f, f"v{i}")
            if stmts is None:
                names[f"G{i}"] = self._gen(f)
                stmts = [f"v{i} = G{i}(r, svc, dep, node, t, clock)"]
            code += ["    " + x for x in stmts]

        def pieces(text: str) -> str:  # the text as f-string parts: literals by name (nothing to escape), fields
            out = []
            for lit, fname, _, _ in string.Formatter().parse(text):
                if lit:
                    names[f"L{len(names)}"] = lit
                    out.append("{L%d}" % (len(names) - 1))
                if fname is not None:
                    out.append("{%s}" % var[fname])
            return "".join(out)

        code.append('    return f"{D}T{clock}Z {node} %s: %s"' % (pieces(tpl.source), pieces(tpl.body)))
        exec("\n".join(code), names)  # noqa: S102 (source built above from the catalog's parsed templates)
        return names["line"]

    def _fields(self, r: random.Random, tpl, svc: str, dep: str, node: str, t: float) -> dict:
        """Random values of ``tpl``'s fields (drawn from ``r`` in field order) for a line at time of day ``t``."""
        clock = _clock(t)
        return {name: self._gen(name)(r, svc, dep, node, t, clock) for name in tpl.fields}

    def log_lines(self, b: int = 0) -> list[str]:
        sim = self.sim
        r = self._rand
        _seed(r, int(sim.key[b]) * 1_000_003 + int(sim.step_idx[b]))  # (as random.Random(that int) would be)
        rand = r.random
        t1 = float(sim.t[b])
        t0 = t1 - sim.cfg.step_s
        span = t1 - t0
        offset = self.offset
        nodes, svc_name, dep_name, compiled = self.topo.nodes, self._svc_name, self._dep_name, self._compiled
        hms_get, ms = _HMS.get, _MS
        out = []
        for tid, s, n in sim.render_lines(b):
            ts = t0 + rand() * span
            tday = offset + ts
            sec = 0.0 if tday < 0.0 else tday  # (_clock(tday), inline)
            whole = int(sec)
            clock = (hms_get(whole) or _hms(whole)) + ms[int((sec - whole) * 1000)]
            out.append((ts, compiled[tid](r, svc_name[s], dep_name[s], nodes[n], tday, clock)))
        out.sort(key=_first)  # (stable: lines at the same instant keep their order)
        return [line for _, line in out]

    def metrics(self, b: int = 0) -> dict:
        sim = self.sim
        # every reported series of the window at once (self._series picks them from the simulator's flat metrics,
        # entity by entity), sample by sample in one flat array (see __init__): interpolated from the previous scrape
        # to this one; the samples before the scrape get 1% unit-variance noise (counter-based: a function of
        # episode and step)
        rows = self._win_rows
        x = sim.prev_obs_flat[b].take(rows) * self._win_1mw + sim.obs_flat[b].take(rows) * self._win_w
        u = rng.table_run(int(sim.key[b]), int(sim.step_idx[b]), P_WINDOW, self._noise_n)
        x *= u.take(self._win_noise) * self._win_scale + self._win_shift  # 1 + 0.01 * sqrt(3) * (2u - 1)
        return self._metric_dicts(x.round(METRIC_DECIMALS).reshape(-1, self._w.shape[1]).tolist())

    def telemetry(self, b: int = 0) -> dict:
        sim = self.sim
        return {"schema": SCHEMA, "time_s": float(sim.t[b]), "window_s": float(sim.cfg.step_s),
                "topology": self.topo.to_dict(), "logs": self.log_lines(b), "metrics": self.metrics(b),
                "alarms": sim.alarms(b)}


_first = operator.itemgetter(0)


# Every whitespace-delimited token that holds a digit. Equivalent to r"\S*\d\S*" (a match can only start at a token
# start, since from there the token's digit, if any, is reachable), but anchored at token starts and possessive, so
# a token without digits is scanned once instead of once per start position: 2.7x faster. ASCII digits and
# whitespace only (what log formats use; another 15% faster than the Unicode classes).
_MASK_RE = re.compile(r"(?<!\S)[^\s\d]*+\d\S*+", re.ASCII)


def mask_body(body: str) -> str:
    """The miner's normal form of a log body: every token holding a digit becomes <*>."""
    return _MASK_RE.sub("<*>", body)


# Where the only whitespace is the space (what rendered logs hold), every token follows a space once a space is put
# before each body: a token holding a digit is then a match of this pattern from the space before it, and the
# pattern's leading literal lets the regex engine jump from space to space instead of testing every position
# (1.4x faster than _MASK_RE on rendered windows; the same result, tested). Where the space and the newline are the
# only ASCII whitespace, the classes \s, \d, \S of re.ASCII are the explicit sets below, which the regex engine tests
# faster (another 20%)
_MASK_SPACE_RE = re.compile(r" [^ \n0-9]*+[0-9][^ \n]*+")
_OTHER_WS = ("\t", "\r", "\x0b", "\x0c")  # (ASCII whitespace besides the space and the newline)


def mask_bodies(bodies: list[str]) -> list[str]:
    """:func:`mask_body` of each body, in one regex pass over the bodies joined by newlines (a newline is
    whitespace, so tokens and token starts are those of each body alone); body by body if one holds a newline.
    Bodies whose only whitespace is the space (rendered ones) are joined by newline + space and masked by
    :data:`_MASK_SPACE_RE`."""
    if not bodies:
        return []
    text = " " + "\n ".join(bodies)
    if text.count("\n") == len(bodies) - 1 and not any(w in text for w in _OTHER_WS):
        return _MASK_SPACE_RE.sub(" <*>", text)[1:].split("\n ")
    masked = _MASK_RE.sub("<*>", "\n".join(bodies)).split("\n")
    return masked if len(masked) == len(bodies) else [_MASK_RE.sub("<*>", b) for b in bodies]


class TemplateMiner:
    """Maps rendered log lines back to template ids: the line's source plus its body with every token that holds
    a digit masked, looked up in a table built by rendering each template with each possible service name.
    Lines matching no template are counted as 'unmatched' (real logs from outside the catalog)."""

    def __init__(self, sim: BatchedSim):
        self.L = len(sim.catalog.templates)
        self.errwarn = [t.level in ("ERROR", "WARNING") for t in sim.catalog.templates]
        self.svc_index = dict(sim.topo.svc_index)
        self.node_index = dict(sim.topo.node_index)
        self.S, self.N = sim.topo.S, sim.topo.N
        names = sim.topo.services
        r = random.Random(0)
        self.table: dict[str, int] = {}
        renderer = Renderer(sim)
        for tid, tpl in enumerate(sim.catalog.templates):
            svcs = names if ("svc" in tpl.fields) else [names[0]]
            deps = names if ("dep" in tpl.fields) else [names[0]]
            for svc in svcs:
                for dep in deps:
                    vals = renderer._fields(r, tpl, svc, dep, "gpu-0", 3600.0)
                    body = tpl.body.format(**vals)
                    source = tpl.source.format(svc=svc) if "{" in tpl.source else tpl.source
                    key = source + "|" + mask_body(body)
                    prev = self.table.setdefault(key, tid)
                    if prev != tid:
                        raise ValueError(f"log templates {self.table and sim.catalog.templates[prev].id!r} and "
                                         f"{tpl.id!r} are indistinguishable after masking: {key!r}")

    def key(self, line: str) -> str:
        parts = line.split(" ", 3)
        if len(parts) < 4:
            return line
        return parts[2][:-1] + "|" + mask_body(parts[3])

    def template_id(self, line: str) -> int:
        return self.table.get(self.key(line), -1)

    def counts(self, lines: list[str]) -> tuple[np.ndarray, int]:
        c, _, _, unmatched = self.mine(lines)
        return c, unmatched

    def mine(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(template counts [L], WARNING/ERROR lines per service by source [S], per host node [N], unmatched).
        Lines that match no template still count for their host/service when they say ERROR or WARN."""
        L = self.L
        c = [0] * L
        sl = [0] * self.S
        nl = [0] * self.N
        get, errwarn, svc_index, node_index = self.table.get, self.errwarn, self.svc_index, self.node_index
        split = [line.split(" ", 3) for line in lines]
        whole = [p for p in split if len(p) == 4]  # (others hold no source and body)
        unmatched = len(split) - len(whole)
        masked = mask_bodies([p[3] for p in whole])
        for (_, host, src, body), key in zip(whole, masked):
            source = src[:-1]
            tid = get(source + "|" + key, -1)
            if tid >= 0:
                c[tid] += 1
                bad = errwarn[tid]
            else:
                unmatched += 1
                bad = "ERROR" in body or "WARN" in body
            if bad:
                si = svc_index.get(source)
                if si is not None:
                    sl[si] += 1
                ni = node_index.get(host)
                if ni is not None:
                    nl[ni] += 1
        return (np.array(c, dtype=np.float64), np.array(sl, dtype=np.float64), np.array(nl, dtype=np.float64),
                unmatched)

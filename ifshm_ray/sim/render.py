"""Raw telemetry of one simulated cluster: log lines rendered from templates, metric windows, alarms; and the
log-template miner that turns rendered lines back into template counts (the numeric observation uses those
counts, mined from text, never the simulator's internal fault state)."""
from __future__ import annotations

import random
import string

import numpy as np

from ifshm_ray.sim.core import GPU_ONLY, NODE_METRICS, SVC_METRICS, BatchedSim, mask_body
from ifshm_ray.telemetry import SCHEMA

_HEX = "0123456789abcdef"
EPOCH_DAY = "2026-11-28"


def _clock(sec: float) -> str:
    sec = max(sec, 0.0)
    ms = int((sec - int(sec)) * 1000)
    s = int(sec)
    return f"{(s // 3600) % 24:02d}:{(s // 60) % 60:02d}:{s % 60:02d}.{ms:03d}"


class Renderer:
    """Renders env ``b`` of a :class:`BatchedSim` to the telemetry schema of :mod:`ifshm_ray.telemetry`."""

    def __init__(self, sim: BatchedSim, start_hour: float = 9.0):
        self.sim = sim
        self.topo = sim.topo
        self.templates = sim.catalog.templates
        self.offset = start_hour * 3600.0
        self._fmt = string.Formatter()
        self.ips = [f"10.20.{i // 8}.{10 + i}" for i in range(self.topo.N)]

    def _fields(self, r: random.Random, tpl, svc: str, dep: str, node: str, t: float) -> dict:
        out = {}
        for name in tpl.fields:
            if name == "svc":
                out[name] = svc
            elif name == "dep":
                out[name] = dep
            elif name == "node":
                out[name] = node
            elif name == "d":
                out[name] = EPOCH_DAY
            elif name == "t":
                out[name] = _clock(t)
            elif name in ("req", "inst", "vol"):
                h = "%032x" % r.getrandbits(128)
                out[name] = f"{r.randrange(10)}{h[1:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
            elif name == "hex":
                out[name] = f"{r.randrange(10)}{r.getrandbits(36):09x}"
            elif name == "pod":
                out[name] = f"{svc}-{r.getrandbits(28):07x}{r.randrange(10)}-{r.randrange(10)}x{r.getrandbits(12):03x}"
            elif name == "pci":
                out[name] = f"0000:{r.choice(('07', '0f', '47', '4e', '87', '90', 'b7', 'bd'))}:00"
            elif name == "ip":
                out[name] = r.choice(self.ips)
            elif name == "up":
                out[name] = f"{100000 + t + r.random():.6f}"
            elif name == "rank":
                out[name] = str(r.randrange(8))
            elif name == "pid":
                out[name] = str(r.randrange(1000, 40000))
            elif name == "f":
                out[name] = f"{r.uniform(0.1, 30):.2f}"
            elif name == "ms":
                out[name] = str(r.randrange(5, 3000))
            else:  # n, m and anything numeric
                out[name] = str(r.randrange(1, 2000))
        return out

    def log_lines(self, b: int = 0) -> list[str]:
        sim = self.sim
        r = random.Random(int(sim.key[b]) * 1_000_003 + int(sim.step_idx[b]))
        t1 = float(sim.t[b])
        t0 = t1 - sim.cfg.step_s
        services, nodes = self.topo.services, self.topo.nodes
        out = []
        for tid, s, n in sim.render_lines(b):
            tpl = self.templates[tid]
            svc = services[s] if s >= 0 else "kernel"
            dep = services[int(np.argmax(self.topo.dep[s]))] if s >= 0 and self.topo.dep[s].any() else "object-storage"
            ts = t0 + r.random() * (t1 - t0)
            vals = self._fields(r, tpl, svc, dep, nodes[n], self.offset + ts)
            body = tpl.body.format(**vals) if tpl.fields else tpl.body.format()
            source = tpl.source.format(svc=svc) if "{" in tpl.source else tpl.source
            out.append((ts, f"{EPOCH_DAY}T{_clock(self.offset + ts)}Z {nodes[n]} {source}: {body}"))
        out.sort(key=lambda x: x[0])
        return [line for _, line in out]

    def metrics(self, b: int = 0) -> dict:
        sim = self.sim
        W = sim.cfg.window_samples
        r = np.random.default_rng(int(sim.key[b]) % (2**63) + int(sim.step_idx[b]))
        w = np.linspace(0.0, 1.0, W)[None, None, :]
        out: dict = {}
        sv = sim.prev_svc_obs[b][:, :, None] * (1 - w) + sim.svc_obs[b][:, :, None] * w
        sv[:, :, :-1] *= 1 + 0.01 * r.standard_normal(sv[:, :, :-1].shape)
        rows = np.round(sv, 4).tolist()
        for i, s in enumerate(self.topo.services):
            out[s] = dict(zip(SVC_METRICS, rows[i]))
        nd = sim.prev_node_obs[b][:, :, None] * (1 - w) + sim.node_obs[b][:, :, None] * w
        nd[:, :, :-1] *= 1 + 0.01 * r.standard_normal(nd[:, :, :-1].shape)
        rows = np.round(nd, 4).tolist()
        for i, n in enumerate(self.topo.nodes):
            d = dict(zip(NODE_METRICS, rows[i]))
            if not sim.gpu_node[i]:
                for m in GPU_ONLY:
                    del d[m]
            out[n] = d
        return out

    def telemetry(self, b: int = 0) -> dict:
        sim = self.sim
        return {"schema": SCHEMA, "time_s": float(sim.t[b]), "window_s": float(sim.cfg.step_s),
                "topology": self.topo.to_dict(), "logs": self.log_lines(b), "metrics": self.metrics(b),
                "alarms": sim.alarms(b)}


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
        c = np.zeros(self.L)
        sl = np.zeros(self.S)
        nl = np.zeros(self.N)
        unmatched = 0
        get = self.table.get
        for line in lines:
            parts = line.split(" ", 3)
            if len(parts) < 4:
                unmatched += 1
                continue
            source = parts[2][:-1]
            tid = get(source + "|" + mask_body(parts[3]), -1)
            if tid >= 0:
                c[tid] += 1
                bad = self.errwarn[tid]
            else:
                unmatched += 1
                bad = "ERROR" in parts[3] or "WARN" in parts[3]
            if bad:
                si = self.svc_index.get(source)
                if si is not None:
                    sl[si] += 1
                ni = self.node_index.get(parts[1])
                if ni is not None:
                    nl[ni] += 1
        return c, sl, nl, unmatched

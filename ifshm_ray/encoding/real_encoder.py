"""The encoder on real data: frozen LM states of Failure-Dataset-OpenStack experiments, heads in grouped
cross-validation with the ablations numeric / text / both, and the unknown score per class left out (issue 14).

Input: a campaign row is read **directly** as the text :func:`~.real_data.counts_as_text` renders (the modal
encoder's Drain would collapse its lines, ``novaclient POST 500 x3``, into a few templates with the numbers masked).
:func:`campaign_contexts` turns every row into an :class:`~.modal.EncodedContext` the :class:`~.semantic.SemanticEncoder`
reads in either path: ``templates`` (items: one event text per event type that occurred, counts: its count; the
learned count-weighted attention pools their LM embeddings) or ``context`` (one LM pass over the whole rendered
text). The numeric feature vector of those contexts is left at zero: the numeric channel is the count matrix itself,
fed to the head beside the text states, never through the simulator's feature normalisation.

Representations (:func:`campaign_features`):

* ``numeric``: log1p counts (what the classical baselines read);
* ``text``: the pooled LM output of the rendered text (``[N, hidden]``; frozen: no gradient, each distinct text
  embedded once);
* ``both``: the two side by side.

Heads (:data:`HEADS`, fixed hyperparameters, never tuned): standardised logistic regression (C=1) and a random
forest (500 trees). Scored with the same grouped folds and bootstrap as :mod:`.real_eval`'s baselines.

Unknown score (:func:`leave_class_out_auroc`): for each class c and each fold, prototypes and radii
(:func:`~.calibration.fit_prototypes`) are fitted on the fold's training samples of the *other* classes only; the
held-out samples are scored with :func:`~.calibration.unknown_score`; AUROC of "held-out c" vs "held-out known"
over the pooled folds (1.0: every sample of the unseen class scores above every known one; 0.5: chance).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from ifshm_ray.encoding import real_eval

log = logging.getLogger(__name__)

ABLATIONS = ("numeric", "text", "both")
HEADS = ("logreg", "random_forest")
FIXED_HEADS = {"logreg": {"C": 1.0, "max_iter": 5000, "features": "standardised"},
               "random_forest": {"n_estimators": 500}}


def campaign_contexts(campaign, feature_dim: int) -> list:
    """Every experiment of ``campaign`` as an :class:`~.modal.EncodedContext`: ``prompt`` the rendered counts text,
    ``items`` the event texts that occurred (column order), ``counts`` their counts, ``features`` zeros."""
    from ifshm_ray.encoding.modal import EncodedContext
    from ifshm_ray.encoding.real_data import counts_as_text, event_as_text

    texts = [event_as_text(e) for e in campaign.events]
    out = []
    for row in campaign.counts:
        nz = np.flatnonzero(row)
        out.append(EncodedContext(prompt=counts_as_text(campaign.events, row), items=[texts[j] for j in nz],
                                  counts=row[nz].astype(np.float32), kinds=["log"] * len(nz),
                                  features=np.zeros(feature_dim, np.float32)))
    return out


def text_states(encoder, ctxs: Sequence, mode: str | None = None, batch: int = 32) -> np.ndarray:
    """Pooled LM output ``[N, hidden]`` of encoded contexts (no gradient; each distinct text embedded once; in
    ``templates`` mode pooled by the encoder's count-weighted attention)."""
    import torch

    mode = mode or encoder.config.mode
    if mode not in ("templates", "context"):
        raise ValueError(f"mode {mode!r}: use 'templates' or 'context'")
    # identical contexts (same prompt) are embedded once: many experiments trace identical count vectors
    uniq = list(dict.fromkeys(c.prompt for c in ctxs))
    first = {p: next(c for c in ctxs if c.prompt == p) for p in uniq}
    encoder.eval()
    rows = []
    with torch.no_grad():
        for i in range(0, len(uniq), batch):
            part = [first[p] for p in uniq[i:i + batch]]
            pooled = encoder._pool_templates(part) if mode == "templates" else encoder._pool_context(part)
            rows.append(pooled.float().cpu().numpy())
    emb = np.concatenate(rows) if rows else np.zeros((0, encoder.hidden_size), np.float32)
    index = {p: i for i, p in enumerate(uniq)}
    return emb[[index[c.prompt] for c in ctxs]]


def campaign_features(encoder, campaign, mode: str | None = None) -> dict[str, np.ndarray]:
    """``numeric`` / ``text`` / ``both`` representations of every experiment (:data:`ABLATIONS`)."""
    numeric = np.log1p(campaign.counts.astype(np.float64))
    text = text_states(encoder, campaign_contexts(campaign, encoder.modal.feature_dim), mode).astype(np.float64)
    return {"numeric": numeric, "text": text, "both": np.concatenate([numeric, text], axis=1)}


def head_model(name: str, seed: int, fixed: dict | None = None):
    """A fresh head over a feature matrix (:data:`HEADS`, hyperparameters from :data:`FIXED_HEADS`)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    hp = fixed or FIXED_HEADS
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=hp["logreg"]["C"],
                                                                  max_iter=hp["logreg"]["max_iter"]))
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=hp["random_forest"]["n_estimators"], random_state=seed, n_jobs=1)
    raise ValueError(f"unknown head {name!r}; expected one of {HEADS}")


def with_trees(n_estimators: int) -> dict:
    return {**FIXED_HEADS, "random_forest": {"n_estimators": n_estimators}}


def roc_auc(pos_scores, neg_scores) -> float:
    """AUROC of positives scoring above negatives (ties count half); NaN when either side is empty."""
    pos, neg = np.asarray(pos_scores, np.float64), np.asarray(neg_scores, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks of ties
    i = 0
    while i < len(sorted_v):
        j = i
        while j + 1 < len(sorted_v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    r_pos = ranks[:len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def leave_class_out_auroc(X: np.ndarray, y, folds, names: dict, quantile: float = 0.95,
                          standardise: bool = True) -> dict:
    """Per class c: AUROC of the unknown score (prototypes fitted without c) separating held-out c samples from
    held-out samples of the known classes, pooled over ``folds``; also the share of c samples scored > 1 (outside
    every known radius) and of known samples scored > 1 (false alarms)."""
    from ifshm_ray.encoding.calibration import fit_prototypes, unknown_score

    y = np.asarray(y)
    classes = sorted(names)
    out = {}
    for c in classes:
        pos, neg = [], []
        for tr, te in folds:
            known = [k for k in classes if k != c]
            tr_k = tr[y[tr] != c]
            if not len(tr_k):
                continue
            Xtr, Xte = X[tr_k], X[te]
            if standardise:  # statistics of the training fold's known samples only
                mu, sd = Xtr.mean(0), np.maximum(Xtr.std(0), 1e-6)
                Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
            ytr = np.asarray([known.index(v) for v in y[tr_k]])
            protos, radii = fit_prototypes(Xtr, ytr, len(known), quantile)
            s, _ = unknown_score(Xte, protos, radii)
            pos += s[y[te] == c].tolist()
            neg += s[y[te] != c].tolist()
        pos_a, neg_a = np.asarray(pos), np.asarray(neg)
        out[names[c]] = {"auroc": round(roc_auc(pos_a, neg_a), 4), "n_unknown": int(len(pos_a)),
                         "n_known": int(len(neg_a)),
                         "unknown_flagged": round(float((pos_a > 1).mean()), 4) if len(pos_a) else None,
                         "known_flagged": round(float((neg_a > 1).mean()), 4) if len(neg_a) else None}
    vals = [v["auroc"] for v in out.values() if np.isfinite(v["auroc"])]
    return {"per_class": out, "mean_auroc": round(float(np.mean(vals)), 4) if vals else None,
            "quantile": quantile}


def evaluate_campaign_encoder(encoder, campaign, n_splits: int = 5, n_boot: int = 1000, seed: int = 0,
                              group_by: str = "experiment", mode: str | None = None,
                              heads: Sequence[str] = HEADS, baselines: Sequence[str] = real_eval.COUNT_BASELINES,
                              fixed_baselines: dict | None = None, fixed_heads: dict | None = None,
                              unknown_on: Sequence[str] = ("text", "both")) -> dict:
    """One campaign in one run: the classical baselines (:func:`.real_eval.evaluate_campaign`) and the encoder's
    heads on ``numeric`` / ``text`` / ``both`` with the **same** grouped folds, plus the leave-one-class-out
    unknown-score AUROC on the representations ``unknown_on``."""
    res = real_eval.evaluate_campaign(campaign, baselines=baselines, n_splits=n_splits, n_boot=n_boot, seed=seed,
                                      group_by=group_by, fixed=fixed_baselines)
    groups = campaign.groups if group_by == "experiment" else real_eval.vector_groups(campaign.counts)
    y = campaign.labels
    folds = real_eval.grouped_folds(y, groups, n_splits, seed)  # the same folds as the baselines (same seed)
    real_eval.check_folds(folds, groups)
    names = {i + 1: n for i, n in enumerate(campaign.label_names)}
    feats = campaign_features(encoder, campaign, mode)
    res["encoder"] = {"model": encoder.config.model, "mode": mode or encoder.config.mode,
                      "text_dim": int(feats["text"].shape[1]), "heads": {}}
    for head in heads:
        for abl in ABLATIONS:
            pred = real_eval.out_of_fold(lambda: head_model(head, seed, fixed_heads), feats[abl], y, folds)
            key = f"{head}:{abl}"
            res["encoder"]["heads"][key] = real_eval.score(y, pred, groups, names, n_boot, seed)
            log.info("%s %s encoder %s: macro-F1 %.3f", campaign.name, group_by, key,
                     res["encoder"]["heads"][key]["macro_f1"])
    res["unknown_score"] = {abl: leave_class_out_auroc(feats[abl], y, folds, names,
                                                       quantile=encoder.config.unknown_quantile)
                            for abl in unknown_on}
    return res


def best_of(res: dict) -> dict:
    """The best classical baseline and the best encoder head (by macro-F1) of a campaign result. An encoder head
    reads the text (``text`` or ``both``): the ``numeric`` ablation is the heads on the counts alone, no encoder."""
    b = max(res["baselines"].items(), key=lambda kv: kv[1]["macro_f1"])
    e = max(((k, v) for k, v in res["encoder"]["heads"].items() if not k.endswith(":numeric")),
            key=lambda kv: kv[1]["macro_f1"])
    t = max(((k, v) for k, v in res["encoder"]["heads"].items() if k.endswith(":text")),
            key=lambda kv: kv[1]["macro_f1"])
    return {"best_baseline": b[0], "best_baseline_macro_f1": b[1]["macro_f1"],
            "best_encoder": e[0], "best_encoder_macro_f1": e[1]["macro_f1"],
            "best_text_only": t[0], "best_text_only_macro_f1": t[1]["macro_f1"],
            "encoder_minus_baseline": round(e[1]["macro_f1"] - b[1]["macro_f1"], 4)}


def holdout_campaign(campaign, checkpoint) -> tuple[object, bool]:
    """The campaign's rows that a fine-tuned checkpoint held out (its ``real_tasks.json``; matched by experiment
    index), so that cross-validating heads on its states never scores a row its LoRA was trained on. Returns
    (campaign, True) when restricted, (campaign unchanged, False) when the checkpoint trained no head for it."""
    import dataclasses
    import json
    from pathlib import Path

    f = Path(checkpoint) / "real_tasks.json" if checkpoint else None
    if f is None or not f.is_file():
        return campaign, False
    rows = json.loads(f.read_text())["holdout_rows"].get(task_name("jss2021", campaign.name))
    if rows is None:
        return campaign, False
    m = np.isin(campaign.row_index, [int(r) for r in rows])
    sub = dataclasses.replace(campaign, counts=campaign.counts[m], labels=campaign.labels[m],
                              row_index=campaign.row_index[m],
                              anomalies=None if campaign.anomalies is None else campaign.anomalies[m])
    return sub, True


def load_encoder(checkpoint: str | None = None, model: str | None = None, seed: int = 0):
    """A fine-tuned encoder from ``checkpoint`` (``jobs/finetune_encoder.py --out``), else a fresh one around the
    backbone ``model`` (a preset: ``minilm``, ``tiny-bert``, ...; no adapter, frozen)."""
    from ifshm_ray.encoding.config import EncoderConfig
    from ifshm_ray.encoding.semantic import SemanticEncoder

    if checkpoint:
        enc = SemanticEncoder.load(checkpoint)
    else:
        cfg = EncoderConfig(model=model or "minilm", adapter="none", seed=seed)
        enc = SemanticEncoder.build(cfg, ["healthy"], with_adapter=True)
    enc.eval()
    return enc


# ---- multi-task fine-tuning data (jobs/finetune_encoder.py) --------------------------------------------------------
def grouped_train_mask(y, groups, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of the training part: per label (a group's most frequent label), ``ceil(fraction * n)`` of
    its groups drawn under ``seed`` (at least one, and one left out when there are two or more); never a group
    on both sides."""
    y, groups = np.asarray(y), np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    glabel = []
    for g in range(len(uniq)):
        vals, cnt = np.unique(y[inv == g], return_counts=True)
        glabel.append(vals[np.argmax(cnt)])
    glabel = np.asarray(glabel)
    rng = np.random.default_rng(seed)
    train_groups = np.zeros(len(uniq), bool)
    for c in np.unique(glabel):
        members = rng.permutation(np.flatnonzero(glabel == c))
        k = int(np.ceil(fraction * len(members)))
        k = min(max(k, 1), len(members) - 1) if len(members) > 1 else 1
        train_groups[members[:k]] = True
    return train_groups[inv]


def task_name(dataset: str, part: str) -> str:
    """A head's name (no dots: it is a ``ModuleDict`` key): ``jss2021_DEPL``, ``fse2019_failure_mode``."""
    return f"{dataset}_{part}"


def real_task_samples(real_cfg, repo) -> tuple[list[dict], dict[str, list[str]], list[str]]:
    """The real labelled samples of a :class:`~.config.RealTrainConfig`: rows ``{task, part ('train' | 'holdout'),
    label, label_id, group, row, ctx (an EncodedContext without features, for JSS) or telemetry}``, the tasks
    (name -> class names) and notes on skipped sets. A configured path that is missing raises
    :class:`~.real_data.RealDataError` when ``if_missing == 'error'``."""
    from pathlib import Path

    from ifshm_ray.encoding.real_data import REAL_CLASSES, RealDataError, load_failure_dataset, load_nezha, load_samples

    def path(p):
        if p is None:
            return None
        q = Path(p) if Path(p).is_absolute() else Path(repo) / p
        if q.exists():
            return q
        if real_cfg.if_missing == "error":
            raise RealDataError(f"real data path {p!r} (resolved {q}) does not exist; set it to the folder, or to "
                                f"null, or real.if_missing=skip")
        notes.append(f"{p}: absent, skipped")
        return None

    notes: list[str] = []
    rows: list[dict] = []
    tasks: dict[str, list[str]] = {}
    jss = path(real_cfg.jss2021)
    if jss is not None:
        data = load_failure_dataset(jss)
        for name in real_cfg.campaigns:
            if name not in data:
                raise RealDataError(f"{jss}: campaign {name!r} (real.campaigns) not found; it has {sorted(data)}")
            c = data[name]
            t = task_name("jss2021", name)
            tasks[t] = list(c.label_names)
            groups = c.groups if real_cfg.group_by == "experiment" else real_eval.vector_groups(c.counts)
            mask = grouped_train_mask(c.labels, groups, real_cfg.train_fraction, real_cfg.seed)
            ctxs = campaign_contexts(c, 0)
            for i in range(len(c.labels)):
                rows.append({"task": t, "part": "train" if mask[i] else "holdout", "label": c.label_names[c.labels[i] - 1],
                             "label_id": int(c.labels[i] - 1), "group": str(groups[i]), "row": int(c.row_index[i]),
                             "ctx": ctxs[i], "telemetry": None})
    fse = path(real_cfg.fse2019)
    if fse is not None:
        samples = load_samples(fse, max_lines=real_cfg.max_lines)
        t = task_name("fse2019", "failure_mode")
        labels = sorted({s.label for s in samples}, key=REAL_CLASSES.index)
        tasks[t] = labels
        y = np.asarray([labels.index(s.label) for s in samples])
        groups = np.asarray([s.meta.get("test") or s.sample_id for s in samples])
        mask = grouped_train_mask(y, groups, real_cfg.train_fraction, real_cfg.seed)
        for i, s in enumerate(samples):
            rows.append({"task": t, "part": "train" if mask[i] else "holdout", "label": s.label,
                         "label_id": int(y[i]), "group": str(groups[i]), "row": s.sample_id, "ctx": None,
                         "telemetry": s.telemetry})
    nz = path(real_cfg.nezha)
    if nz is not None:
        samples = load_nezha(nz, max_lines=real_cfg.max_lines)
        t = task_name("nezha", "fault_type")
        labels = sorted({s.fault_type for s in samples})
        tasks[t] = labels
        y = np.asarray([labels.index(s.fault_type) for s in samples])
        mask = grouped_train_mask(y, np.arange(len(samples)), real_cfg.train_fraction, real_cfg.seed)
        for i, s in enumerate(samples):
            rows.append({"task": t, "part": "train" if mask[i] else "holdout", "label": s.fault_type,
                         "label_id": int(y[i]), "group": s.sample_id, "row": s.sample_id, "ctx": None,
                         "telemetry": s.telemetry})
    return rows, tasks, notes

"""Classical baselines on the real failure data, scored with grouped cross-validation and bootstrap intervals.

The yardstick the encoder must meet on real data (issue 14): every number here comes from out-of-fold predictions,
folds never split a group, and no hyperparameter is chosen on any data (all are fixed below, :data:`FIXED`).

Groups and folds:

* Failure-Dataset-OpenStack (:func:`evaluate_campaign`): one experiment per row, so ``group_by="experiment"``
  gives stratified K folds over experiments (``StratifiedGroupKFold`` with the experiment index as group).
  Many experiments have *identical* count vectors (dev split: DEPL 538 distinct of 808, NET 214 of 421, STO 90
  of 675), so the same vector lands on both sides of a fold; ``group_by="vector"`` puts identical vectors in one
  group (a stricter test: can the model label a trace pattern it has never seen?).
* FSE 2019 fault-injection runs (:func:`evaluate_fse`): one group per test (its two rounds), leave-one-group-out.
* Nezha (:func:`evaluate_nezha`): 4 samples, one per fault type; nothing to train on. An unsupervised root-cause
  ranking (largest metric shift after injection) and the majority class, with Wilson intervals, as context.

Scores: macro-F1 (over the classes present in the scored labels) and accuracy of the pooled out-of-fold
predictions, 95 % percentile-bootstrap intervals over **groups** (resampling whole groups, ``n_boot`` times),
and per class precision / recall / F1 / support. Deterministic under ``seed`` (folds, forests, bootstrap).

Baselines (scikit-learn, ``n_jobs=1``):

* ``majority``: the most frequent training class;
* ``logreg``: log1p counts -> standardised -> multinomial logistic regression (C=1);
* ``random_forest``: log1p counts -> 500 trees;
* ``gradient_boosting``: log1p counts -> histogram gradient boosting (100 iterations, no early stopping);
* ``text_tfidf_logreg``: the counts rendered as the text the encoder reads (:func:`~.real_data.counts_as_text`,
  ``novaclient POST 500 x3``) -> TF-IDF over word 1-3-grams -> logistic regression (C=1): what a bag of words
  gets from that text, the classical counterpart of the encoder's text-only ablation;
* ``drain_tfidf_logreg`` (raw logs): Drain templates mined on the training fold only (a test line that matches
  none becomes ``UNSEEN``) -> TF-IDF over template ids -> logistic regression (C=1);
* ``drain_counts_rf`` (raw logs): the same templates' log1p counts -> 500 trees.
"""
from __future__ import annotations

import functools
import logging
import re
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: The fixed hyperparameters of every baseline (never tuned; stated in the report).
FIXED = {
    "logreg": {"C": 1.0, "max_iter": 5000, "features": "log1p counts, standardised"},
    "random_forest": {"n_estimators": 500, "features": "log1p counts"},
    "gradient_boosting": {"max_iter": 100, "learning_rate": 0.1, "early_stopping": False, "features": "log1p counts"},
    "text_tfidf_logreg": {"C": 1.0, "tfidf": "sublinear_tf, word 1-3-grams, token = whitespace-separated word"},
    "drain": {"sim_th": 0.5, "depth": 4, "masks": "ifshm_ray.encoding.modal.MASKS", "fit_on": "training fold only"},
    "drain_tfidf_logreg": {"C": 1.0, "tfidf": "sublinear_tf, token = template id"},
    "drain_counts_rf": {"n_estimators": 500, "features": "log1p template counts"},
}
COUNT_BASELINES = ("majority", "logreg", "random_forest", "gradient_boosting", "text_tfidf_logreg")
TEXT_BASELINES = ("text_tfidf_logreg",)
"""Count baselines that read the rendered text instead of the count matrix."""
LOG_BASELINES = ("majority", "drain_tfidf_logreg", "drain_counts_rf")


# ---- models ------------------------------------------------------------------------------------------------------
def with_trees(n_estimators: int) -> dict:
    """:data:`FIXED` with another forest size (``jobs/real_baselines.py --trees``: quick smoke runs)."""
    return {**FIXED, "random_forest": {**FIXED["random_forest"], "n_estimators": n_estimators},
            "drain_counts_rf": {**FIXED["drain_counts_rf"], "n_estimators": n_estimators}}


def count_model(name: str, seed: int, fixed: dict | None = None):
    """A fresh, unfitted baseline on a count matrix (rows: samples); hyperparameters from ``fixed`` (:data:`FIXED`)."""
    hp = fixed or FIXED
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    log1p = FunctionTransformer(np.log1p)
    if name == "majority":
        return DummyClassifier(strategy="most_frequent")
    if name == "logreg":
        return make_pipeline(log1p, StandardScaler(), LogisticRegression(C=hp["logreg"]["C"],
                                                                         max_iter=hp["logreg"]["max_iter"]))
    if name == "random_forest":
        return make_pipeline(log1p, RandomForestClassifier(n_estimators=hp["random_forest"]["n_estimators"],
                                                           random_state=seed, n_jobs=1))
    if name == "gradient_boosting":
        g = hp["gradient_boosting"]
        hgb = HistGradientBoostingClassifier(max_iter=g["max_iter"], learning_rate=g["learning_rate"],
                                             early_stopping=g["early_stopping"], random_state=seed)
        return make_pipeline(log1p, hgb)
    if name == "text_tfidf_logreg":
        from sklearn.feature_extraction.text import TfidfVectorizer

        tfidf = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 3), sublinear_tf=True)
        return make_pipeline(tfidf, LogisticRegression(C=hp["text_tfidf_logreg"]["C"], max_iter=5000))
    raise ValueError(f"unknown count baseline {name!r}; expected one of {COUNT_BASELINES}")


_OSLO_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)? \d+ (?P<level>[A-Z]+) (?P<logger>\S+) ")
_CTX = re.compile(r"^\[[^\]]*\]\s*")


def log_message(line: str) -> str:
    """An oslo.log line without its timestamp, pid and request context: ``LEVEL logger message``."""
    m = _OSLO_PREFIX.match(line)
    if not m:
        return line
    return f"{m.group('level')} {m.group('logger')} {_CTX.sub('', line[m.end():])}"


@functools.lru_cache(maxsize=None)
def _mask_patterns() -> tuple:
    from ifshm_ray.encoding.modal import MASKS

    return tuple((re.compile(p), f"<{m}>") for p, m in MASKS)


@functools.lru_cache(maxsize=1 << 18)
def masked_message(line: str) -> str:
    """:func:`log_message` with the masks of :mod:`ifshm_ray.encoding.modal` applied (ids, addresses, paths,
    numbers); cached, since every fold's Drain sees the same lines."""
    msg = log_message(line)
    for pat, repl in _mask_patterns():
        msg = pat.sub(repl, msg)
    return msg


class DrainTemplates:
    """scikit-learn transformer: a sample (list of raw log lines) -> a string of template ids (``T3 T3 T17 ...``).

    :meth:`fit` mines templates (Drain3, masks of :mod:`ifshm_ray.encoding.modal`) on the training samples only;
    :meth:`transform` matches lines against them without learning; a line that matches none is ``UNSEEN``."""

    def __init__(self, sim_th: float = 0.5, depth: int = 4):
        self.sim_th = sim_th
        self.depth = depth

    def get_params(self, deep: bool = True) -> dict:
        return {"sim_th": self.sim_th, "depth": self.depth}

    def set_params(self, **params):
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _miner(self):
        from drain3 import TemplateMiner
        from drain3.template_miner_config import TemplateMinerConfig

        c = TemplateMinerConfig()
        c.drain_sim_th, c.drain_depth = self.sim_th, self.depth
        c.parametrize_numeric_tokens = True
        c.profiling_enabled = False
        return TemplateMiner(None, c)

    def fit(self, docs: Sequence[Sequence[str]], y=None) -> "DrainTemplates":
        # a message Drain has already seen leaves its templates unchanged: each distinct one is added once
        self.miner_ = self._miner()
        seen: set[str] = set()
        for doc in docs:
            for line in doc:
                msg = masked_message(line)
                if msg not in seen:
                    seen.add(msg)
                    self.miner_.add_log_message(msg)
        return self

    def transform(self, docs: Sequence[Sequence[str]]) -> list[str]:
        out, ids_of = [], {}
        for doc in docs:
            ids = []
            for line in doc:
                msg = masked_message(line)
                if msg not in ids_of:
                    c = self.miner_.match(msg)
                    ids_of[msg] = f"T{c.cluster_id}" if c is not None else "UNSEEN"
                ids.append(ids_of[msg])
            out.append(" ".join(ids))
        return out

    def fit_transform(self, docs, y=None) -> list[str]:
        return self.fit(docs).transform(docs)


def log_model(name: str, seed: int, fixed: dict | None = None):
    """A fresh, unfitted baseline on raw logs (each sample: a list of lines); hyperparameters from ``fixed``."""
    hp = fixed or FIXED
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    d = hp["drain"]
    tokens = dict(token_pattern=r"\S+", lowercase=False)
    if name == "majority":
        return DummyClassifier(strategy="most_frequent")
    if name == "drain_tfidf_logreg":
        return make_pipeline(DrainTemplates(d["sim_th"], d["depth"]), TfidfVectorizer(sublinear_tf=True, **tokens),
                             LogisticRegression(C=hp["drain_tfidf_logreg"]["C"], max_iter=5000))
    if name == "drain_counts_rf":
        return make_pipeline(DrainTemplates(d["sim_th"], d["depth"]), CountVectorizer(**tokens),
                             FunctionTransformer(lambda x: x.astype(np.float64).log1p(), accept_sparse=True),
                             RandomForestClassifier(n_estimators=hp["drain_counts_rf"]["n_estimators"],
                                                    random_state=seed, n_jobs=1))
    raise ValueError(f"unknown log baseline {name!r}; expected one of {LOG_BASELINES}")


# ---- folds and scores --------------------------------------------------------------------------------------------
def grouped_folds(y, groups, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds that never split a group (``StratifiedGroupKFold``, shuffled under ``seed``);
    leave-one-group-out when ``n_splits <= 0`` or there are no more groups than ``n_splits``."""
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold

    y, groups = np.asarray(y), np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_splits <= 0 or n_splits >= n_groups:
        return list(LeaveOneGroupOut().split(np.zeros(len(y)), y, groups))
    return list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
                .split(np.zeros(len(y)), y, groups))


def check_folds(folds, groups) -> None:
    """Every sample scored once; no group on both sides of any fold."""
    groups = np.asarray(groups)
    seen = np.concatenate([te for _, te in folds])
    if len(seen) != len(groups) or len(np.unique(seen)) != len(groups):
        raise AssertionError("folds do not score every sample exactly once")
    for tr, te in folds:
        if set(groups[tr]) & set(groups[te]):
            raise AssertionError("a group is on both sides of a fold")


def out_of_fold(make_model: Callable[[], object], X, y, folds) -> np.ndarray:
    """Predictions of a model fitted per fold on the training part only (one OpenMP / BLAS thread: on a shared
    2-core box, gradient boosting's default threads ran ~100x slower)."""
    from threadpoolctl import threadpool_limits

    y = np.asarray(y)
    pred = np.empty_like(y)
    with threadpool_limits(1):
        for tr, te in folds:
            model = make_model()
            Xtr = [X[i] for i in tr] if isinstance(X, list) else X[tr]
            Xte = [X[i] for i in te] if isinstance(X, list) else X[te]
            model.fit(Xtr, y[tr])
            pred[te] = model.predict(Xte)
    return pred


def macro_f1(y, pred) -> float:
    """Macro-averaged F1 over the classes present in ``y`` (a predicted class absent from ``y`` still costs
    precision of the classes it was taken from); the same as scikit-learn's ``f1_score(..., labels=unique(y))``."""
    y, pred = np.asarray(y), np.asarray(pred)
    f1s = []
    for c in np.unique(y):
        tp = np.count_nonzero((y == c) & (pred == c))
        denom = np.count_nonzero(y == c) + np.count_nonzero(pred == c)
        f1s.append(2.0 * tp / denom)
    return float(np.mean(f1s)) if f1s else 0.0


def accuracy(y, pred) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(pred)))


def bootstrap_ci(y, pred, groups, metric: Callable, n_boot: int, seed: int, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of ``metric(y, pred)``, resampling whole groups with replacement."""
    y, pred, groups = np.asarray(y), np.asarray(pred), np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    vals = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        vals[b] = metric(y[idx], pred[idx])
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def per_class(y, pred, names: dict) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    labels = sorted(names)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {names[c]: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                       "f1": round(float(f[i]), 4), "support": int(s[i])} for i, c in enumerate(labels)}


def score(y, pred, groups, names: dict, n_boot: int, seed: int) -> dict:
    return {"macro_f1": round(macro_f1(y, pred), 4),
            "macro_f1_ci": [round(v, 4) for v in bootstrap_ci(y, pred, groups, macro_f1, n_boot, seed)],
            "accuracy": round(accuracy(y, pred), 4),
            "accuracy_ci": [round(v, 4) for v in bootstrap_ci(y, pred, groups, accuracy, n_boot, seed)],
            "n": int(len(y)), "per_class": per_class(y, pred, names)}


# ---- per dataset --------------------------------------------------------------------------------------------------
def vector_groups(counts: np.ndarray) -> np.ndarray:
    """One group id per distinct count vector."""
    return np.unique(counts, axis=0, return_inverse=True)[1].ravel()


def evaluate_campaign(campaign, baselines: Sequence[str] = COUNT_BASELINES, n_splits: int = 5, n_boot: int = 1000,
                      seed: int = 0, group_by: str = "experiment", fixed: dict | None = None) -> dict:
    """Count baselines on one Failure-Dataset-OpenStack campaign (:class:`~.real_data.Campaign`)."""
    if group_by == "experiment":
        groups = campaign.groups
    elif group_by == "vector":
        groups = vector_groups(campaign.counts)
    else:
        raise ValueError(f"group_by={group_by!r}; expected 'experiment' or 'vector'")
    y = campaign.labels
    folds = grouped_folds(y, groups, n_splits, seed)
    check_folds(folds, groups)
    names = {i + 1: n for i, n in enumerate(campaign.label_names)}
    X = campaign.counts.astype(np.float64)
    texts = campaign.texts() if set(baselines) & set(TEXT_BASELINES) else None
    res = {"n": int(len(y)), "groups": int(len(np.unique(groups))), "group_by": group_by, "folds": len(folds),
           "distinct_vectors": int(len(np.unique(campaign.counts, axis=0))), "baselines": {}}
    for b in baselines:
        pred = out_of_fold(lambda: count_model(b, seed, fixed), texts if b in TEXT_BASELINES else X, y, folds)
        res["baselines"][b] = score(y, pred, groups, names, n_boot, seed)
        log.info("%s %s %s: macro-F1 %.3f", campaign.name, group_by, b, res["baselines"][b]["macro_f1"])
    return res


def evaluate_fse(samples, baselines: Sequence[str] = LOG_BASELINES, n_boot: int = 1000, seed: int = 0,
                 fixed: dict | None = None) -> dict:
    """Raw-log baselines on the FSE 2019 samples (:func:`~.real_data.load_samples`; service logs only), label
    ``failure_mode`` as scored (:data:`~.real_data.REAL_CLASSES`), leave-one-test-out."""
    from ifshm_ray.encoding.real_data import REAL_CLASSES

    y = np.asarray([REAL_CLASSES.index(s.label) for s in samples])
    groups = np.asarray([s.meta.get("test") or s.sample_id for s in samples])
    folds = grouped_folds(y, groups, 0, seed)
    check_folds(folds, groups)
    docs = [list(s.telemetry["logs"]) for s in samples]
    names = {i: c for i, c in enumerate(REAL_CLASSES) if i in set(y.tolist())}
    res = {"n": int(len(y)), "groups": int(len(np.unique(groups))), "group_by": "test (its two rounds)",
           "folds": len(folds), "baselines": {}}
    for b in baselines:
        pred = out_of_fold(lambda: log_model(b, seed, fixed), docs, y, folds)
        res["baselines"][b] = score(y, pred, groups, names, n_boot, seed)
    return res


NEZHA_SHIFT_EXCLUDE = re.compile(r"^Node")


def metric_shift_ranking(sample) -> list[tuple[str, float]]:
    """Services ranked by their largest metric shift after injection: per pod metric (node-level metrics left
    out), ``|mean(after) - mean(before)| / (std(before) + 1e-3 * |mean(before)| + 1e-9)``; the service's score is
    its maximum over its metrics and pods. Uses the injection time only to split the window (an alert would give
    the onset)."""
    from ifshm_ray.encoding.real_data import pod_service

    t = np.asarray(sample.metric_times)
    before, after = t < sample.inject_time, t >= sample.inject_time
    scores: dict[str, float] = {}
    for svc, series in sample.telemetry["metrics"].items():
        if svc == "front_service":
            continue
        best = 0.0
        for name, vals in series.items():
            v = np.asarray(vals, dtype=np.float64)
            if NEZHA_SHIFT_EXCLUDE.match(name) or len(v) != len(t) or not before.any() or not after.any():
                continue
            b, a = v[before], v[after]
            best = max(best, abs(a.mean() - b.mean()) / (b.std() + 1e-3 * abs(b.mean()) + 1e-9))
        name = pod_service(svc)  # a second pod of a service is keyed by its pod name
        scores[name] = max(scores.get(name, 0.0), float(best))
    return sorted(scores.items(), key=lambda s: (-s[1], s[0]))


def evaluate_nezha(samples) -> dict:
    """Root-cause service top-1 / top-3 of :func:`metric_shift_ranking` (no training) and fault-type majority
    class (leave-one-out), each with a 95 % Wilson interval."""
    from ifshm_ray.encoding.calibration import wilson_interval

    n = len(samples)
    ranks = [[s for s, _ in metric_shift_ranking(x)] for x in samples]
    top1 = sum(r[:1] == [x.root_cause_service] for r, x in zip(ranks, samples))
    top3 = sum(x.root_cause_service in r[:3] for r, x in zip(ranks, samples))
    types = [x.fault_type for x in samples]
    maj = 0
    for i, t in enumerate(types):
        rest = types[:i] + types[i + 1:]
        if rest:
            vals, cnt = np.unique(rest, return_counts=True)
            maj += int(vals[np.argmax(cnt)] == t)
    ci = lambda k: [round(v, 4) for v in wilson_interval(k, n)]  # noqa: E731
    return {"n": n, "root_cause_metric_shift": {"top1": top1 / n if n else 0.0, "top1_ci": ci(top1),
                                                "top3": top3 / n if n else 0.0, "top3_ci": ci(top3)},
            "fault_type_majority_loo": {"accuracy": maj / n if n else 0.0, "accuracy_ci": ci(maj)},
            "predicted_root_cause": {x.sample_id: r[:3] for x, r in zip(samples, ranks)},
            "modalities": {x.sample_id: sorted(k for k in ("metric", "trace", "log")
                                               if k != "log" or x.has_logs) for x in samples}}

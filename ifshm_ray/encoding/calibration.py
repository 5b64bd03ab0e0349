"""Small numerical pieces of the fault-mode head: temperature scaling, calibration error, prototypes and the
"unknown" score, classification metrics and confidence intervals. numpy + torch only."""
from __future__ import annotations

import math

import numpy as np


def fit_temperature(logits, labels, max_iter: int = 200) -> float:
    """Temperature T > 0 that minimises the NLL of ``softmax(logits / T)`` on validation data (Guo et al., 2017).

    ``logits``: [N, C] array; ``labels``: [N] ints. Returns 1.0 for empty input."""
    import torch

    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if z.numel() == 0 or y.numel() == 0:
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return float(min(max(t, 0.05), 20.0)) if math.isfinite(t) else 1.0


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(probs, labels) -> float:
    p = np.asarray(probs)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))


def expected_calibration_error(probs, labels, n_bins: int = 10) -> float:
    """ECE: mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fit_prototypes(states, labels, num_classes: int, quantile: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Known-fault prototypes in the semantic space: the normalised mean of each class's unit state vectors, and a
    radius per class (``quantile`` of its members' cosine distances to the prototype, at least 1e-3).
    A class without members gets a zero prototype and radius 1 (it then never is the nearest one)."""
    s = _unit(np.asarray(states, np.float64))
    labels = np.asarray(labels)
    protos = np.zeros((num_classes, s.shape[1]))
    radii = np.ones(num_classes)
    for c in range(num_classes):
        m = labels == c
        if not m.any():
            continue
        protos[c] = _unit(s[m].mean(axis=0))
        d = 1.0 - s[m] @ protos[c]
        radii[c] = max(float(np.quantile(d, quantile)), 1e-3)
    return protos.astype(np.float32), radii.astype(np.float32)


def unknown_score(states, prototypes, radii) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each state to the nearest known-fault prototype, in units of that prototype's radius
    (cosine distance / radius; > 1: outside every known cluster). Returns (score, index of the nearest class)."""
    s = _unit(np.asarray(states, np.float64))
    p = np.asarray(prototypes, np.float64)
    valid = np.linalg.norm(p, axis=1) > 0
    d = 1.0 - s @ p.T
    if not valid.any():  # no prototypes fitted yet
        return np.full(len(s), np.nan, np.float32), np.zeros(len(s), np.int64)
    d[:, ~valid] = np.inf
    scaled = d / np.asarray(radii, np.float64)[None, :]
    nearest = scaled.argmin(axis=1)
    return scaled[np.arange(len(s)), nearest].astype(np.float32), nearest


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    for t, p in zip(y_true, y_pred):
        cm[int(t), int(p)] += 1
    return cm


def macro_f1(y_true, y_pred, labels=None) -> float:
    """Macro-averaged F1 over ``labels`` (default: the classes present in ``y_true`` or ``y_pred``)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if labels is None:
        labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    f1s = []
    for c in labels:
        tp = np.sum((y_true == c) & (y_pred == c))
        fp = np.sum((y_true != c) & (y_pred == c))
        fn = np.sum((y_true == c) & (y_pred != c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)

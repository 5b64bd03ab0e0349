"""A small multinomial logistic regression (L2, LBFGS in torch): the baseline classifier and the few-shot head."""
from __future__ import annotations

import numpy as np


class LogisticRegression:
    """Standardised inputs -> softmax over classes, fitted with LBFGS on the L2-regularised NLL."""

    def __init__(self, l2: float = 1e-2, max_iter: int = 300):
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        self.mean = self.std = self.W = self.b = None
        self.classes_: np.ndarray | None = None

    def fit(self, X, y) -> "LogisticRegression":
        import torch

        X = np.asarray(X, np.float64)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        yi = np.searchsorted(self.classes_, y)
        self.mean = X.mean(0)
        self.std = np.maximum(X.std(0), 1e-6)
        Xt = torch.as_tensor((X - self.mean) / self.std)
        yt = torch.as_tensor(yi, dtype=torch.long)
        k = len(self.classes_)
        W = torch.zeros(X.shape[1], k, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(Xt @ W + b, yt) + self.l2 * (W * W).sum()
            loss.backward()
            return loss

        if k > 1:
            opt.step(closure)
        self.W, self.b = W.detach().numpy(), b.detach().numpy()
        return self

    def decision_function(self, X) -> np.ndarray:
        X = (np.asarray(X, np.float64) - self.mean) / self.std
        return X @ self.W + self.b

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(1)]


def leave_one_out_predictions(X, y, l2: float = 1e-1) -> np.ndarray:
    """Predict each sample with a head fitted on all *other* samples (nothing scored was trained on)."""
    X = np.asarray(X)
    y = np.asarray(y)
    out = np.empty(len(y), dtype=y.dtype)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = LogisticRegression(l2=l2).fit(X[keep], y[keep]).predict(X[i:i + 1])[0]
    return out

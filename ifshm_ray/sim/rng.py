"""Counter-based random numbers (splitmix64), vectorised over a batch of environments.

Every draw is a pure function of (episode key, step counter, purpose, index), so a batch of B simulators gives
exactly the numbers B single simulators with the same keys give, whatever the batch size or order.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_INV53 = 1.0 / float(1 << 53)


def mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def uniform(keys: np.ndarray, counter: np.ndarray, purpose: int, n: int) -> np.ndarray:
    """Uniform [0, 1) floats of shape (len(keys), n) for (key, counter, purpose)."""
    keys = np.asarray(keys, dtype=np.uint64)
    counter = np.asarray(counter, dtype=np.uint64)
    with np.errstate(over="ignore"):
        base = mix64(keys ^ mix64(counter * np.uint64(1024) + np.uint64(purpose)))
        z = base[:, None] + (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    return (mix64(z) >> _S11).astype(np.float64) * _INV53


def normal(keys: np.ndarray, counter: np.ndarray, purpose: int, n: int) -> np.ndarray:
    """Standard normal floats of shape (len(keys), n) (Box-Muller on two uniform streams)."""
    u1 = uniform(keys, counter, purpose, n)
    u2 = uniform(keys, counter, purpose + 512, n)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)

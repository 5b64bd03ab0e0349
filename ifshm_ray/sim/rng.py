"""Counter-based random numbers, vectorised over a batch of environments.

Every draw is a pure function of (episode key, step counter, purpose, index), so a batch of B simulators gives
exactly the numbers B single simulators with the same keys give, whatever the batch size or order.
:func:`uniform` hashes every number with splitmix64; :func:`table_uniform` (used for the per-step bulk draws)
hashes only a start offset into a fixed table of 2^20 uniforms and reads a contiguous run from it, which is
several times cheaper for large batches and good enough for simulation noise.
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
    if keys.shape == (1,) and counter.shape == (1,) and n <= _RUN_MAX:  # one env (a single env's reset): the same
        # hashes, the start on Python ints (as table_run) and the run from the precomputed multiples of the constant
        base = _mix64_int(int(keys[0]) ^ _mix64_int((int(counter[0]) * 1024 + purpose) & _MASK64))
        z = _GOLDEN_RUN[:n] + np.uint64(base)  # (uint64 arrays wrap, as below)
        return ((mix64(z) >> _S11).astype(np.float64) * _INV53)[None]
    with np.errstate(over="ignore"):
        base = mix64(keys ^ mix64(counter * np.uint64(1024) + np.uint64(purpose)))
        z = base[:, None] + (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    return (mix64(z) >> _S11).astype(np.float64) * _INV53


def normal(keys: np.ndarray, counter: np.ndarray, purpose: int, n: int) -> np.ndarray:
    """Standard normal floats of shape (len(keys), n) (Box-Muller on two uniform streams)."""
    u1 = uniform(keys, counter, purpose, n)
    u2 = uniform(keys, counter, purpose + 512, n)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


_TABLE_SIZE = 1 << 20
_TABLE = np.random.default_rng(20261128).random(_TABLE_SIZE + 4096)
_TABLE_RUNS = np.lib.stride_tricks.sliding_window_view(_TABLE, 4096)  # row i: _TABLE[i:i + 4096] (a read-only view)


_MASK64 = (1 << 64) - 1
_RUN_MAX = 4096
with np.errstate(over="ignore"):
    _GOLDEN_RUN = np.arange(1, _RUN_MAX + 1, dtype=np.uint64) * _GOLDEN  # (index i: (i + 1) * golden, wrapped)


def _mix64_int(z: int) -> int:
    """:func:`mix64` of one number as a Python int (same wrapping arithmetic, without numpy's per-call cost)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def table_run(key: int, counter: int, purpose: int, n: int) -> np.ndarray:
    """Row 0 of ``table_uniform([key], [counter], purpose, n)`` for Python ints, as a read-only view."""
    off = _mix64_int(key ^ _mix64_int((counter * 1024 + purpose) & _MASK64)) % _TABLE_SIZE
    return _TABLE_RUNS[off, :n]


def table_uniform(keys: np.ndarray, counter: np.ndarray, purpose: int, n: int) -> np.ndarray:
    """Uniform [0, 1) floats of shape (len(keys), n): a run of n table entries from a hashed start offset.
    The result may be a read-only view of the table."""
    if n > 4096:
        raise ValueError(f"table_uniform draws at most 4096 numbers per row, asked for {n}")
    if len(keys) == 1 and len(counter) == 1:  # one env (the single env's every step): the same hash on ints
        return table_run(int(keys[0]), int(counter[0]), purpose, n)[None]
    keys = np.asarray(keys, dtype=np.uint64)
    counter = np.asarray(counter, dtype=np.uint64)
    with np.errstate(over="ignore"):
        off = mix64(keys ^ mix64(counter * np.uint64(1024) + np.uint64(purpose))) % np.uint64(_TABLE_SIZE)
    # rows of a strided view: copied run by run, without building an index per number
    return _TABLE_RUNS[off.astype(np.int64), :n]

"""The one LRU cache of the project (LM embeddings, diagnoses, policy outputs), and the key of an LM input."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Hashable

from cachetools import LRUCache as _LRU


def text_key(text: str, salt: str = "") -> str:
    """128-bit BLAKE2b hex digest of ``salt`` + NUL + ``text`` (the exact string given to the tokenizer).

    ``salt`` names the model + adapter version, so a cache never mixes outputs of two different encoders."""
    return hashlib.blake2b(f"{salt}\0{text}".encode("utf-8"), digest_size=16).hexdigest()


class LRUCache:
    """``cachetools.LRUCache`` that counts hits and misses; ``maxsize`` 0 turns the cache off (stores nothing)."""

    def __init__(self, maxsize: int = 8192):
        if maxsize < 0:
            raise ValueError(f"maxsize={maxsize}: an LRU cache size must be >= 0 (0 turns the cache off)")
        self.maxsize = int(maxsize)
        self._data: _LRU = _LRU(max(1, self.maxsize))
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The cached value (now the most recently used) or ``default``; counts a hit or a miss."""
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            self.misses += 1
            return default
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.maxsize:
            self._data[key] = value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Drop every entry (e.g. after the adapter changed); the counters stay."""
        self._data.clear()

    def reset_stats(self) -> None:
        self.hits = 0
        self.misses = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate, "entries": len(self._data),
                "maxsize": self.maxsize}


_MISSING = object()


def telemetry_key(telemetry: dict, salt: str = "") -> str:
    """Hash of a telemetry window's content (logs, metrics, alarms; time stamps excluded) and ``salt``."""
    body = {k: telemetry.get(k) for k in ("logs", "metrics", "alarms")}
    return text_key(json.dumps(body, sort_keys=True, separators=(",", ":")), salt)

"""LRU cache of language-model outputs, keyed by a hash of exactly the text the model sees."""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Hashable


def text_key(text: str, salt: str = "") -> str:
    """128-bit BLAKE2b hex digest of ``salt`` + NUL + ``text`` (the exact string given to the tokenizer).

    ``salt`` names the model + adapter version, so a cache never mixes outputs of two different encoders."""
    return hashlib.blake2b(f"{salt}\0{text}".encode("utf-8"), digest_size=16).hexdigest()


class LRUCache:
    """A bounded mapping that forgets the least recently used entry; counts hits and misses."""

    def __init__(self, maxsize: int = 8192):
        if maxsize < 1:
            raise ValueError(f"maxsize={maxsize}: an LRU cache needs room for at least one entry")
        self.maxsize = int(maxsize)
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        if key in self._data:
            self._data.move_to_end(key)
            self.hits += 1
            return self._data[key]
        self.misses += 1
        return default

    def put(self, key: Hashable, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

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

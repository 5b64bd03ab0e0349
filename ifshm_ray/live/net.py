"""The live pieces talk to 127.0.0.1 only: helpers that refuse any other address, with a clear message."""
from __future__ import annotations

from urllib.parse import urlsplit

from ifshm_ray.config import ConfigError

LOOPBACK = ("127.0.0.1", "localhost")


def check_loopback_host(host: str, what: str) -> str:
    """``host`` when it is a loopback name, else :class:`ConfigError`."""
    if host not in LOOPBACK:
        raise ConfigError(f"{what} host {host!r} is not allowed: the live stack stays on 127.0.0.1")
    return host


def check_loopback_url(url: str, what: str) -> str:
    """``url`` without a trailing slash when it is ``http://127.0.0.1:PORT...``, else :class:`ConfigError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{what} URL {url!r} must start with http://127.0.0.1")
    check_loopback_host(parts.hostname or "", f"{what} URL {url!r}:")
    return url.rstrip("/")

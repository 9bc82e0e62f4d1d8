"""Is the Hugging Face hub usable right now? One quick answer instead of minutes of retries."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from layerscope.errors import LayerscopeError

_TRUE = {"1", "ON", "YES", "TRUE"}
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_reason(probe_timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be used right now, or ``None`` when it looks reachable.

    Parameters
    ----------
    probe_timeout : float
        Seconds to wait for a TCP connection to the hub's endpoint (skipped behind a proxy).

    Returns
    -------
    str or None
        ``"HF_HUB_OFFLINE=1 is set"``, ``"cannot reach huggingface.co"`` or ``None``.
    """
    for variable in _OFFLINE_VARIABLES:
        if os.environ.get(variable, "").upper() in _TRUE:
            return f"{variable}={os.environ[variable]} is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a direct probe says nothing about a proxied connection
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return _probe(endpoint.hostname or "huggingface.co", endpoint.port or 443, probe_timeout)


@functools.lru_cache(maxsize=8)
def _probe(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError:
        return f"cannot reach {host}"


def require_hub(what: str) -> None:
    """Raise a one-line error when the hub is not usable; ``what`` starts the message."""
    reason = offline_reason()
    if reason is not None:
        raise LayerscopeError(f"{what} needs the Hugging Face hub, which is not available here ({reason})")

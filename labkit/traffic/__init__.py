"""Traffic you can watch: an aiohttp load generator that records one ``Outcome`` per request.

Every run happens on one background event loop thread, so ``send()`` works the same in a script and inside
Jupyter's already-running loop, and a ``Stream`` keeps sending while the kernel stays responsive.

``results``: ``Outcome`` and ``TrafficResult``; ``load``: the load generator (``run``); ``runner``: the
background thread, ``send``, ``Stream`` and the registry ``stop_all()`` ends.
"""

from __future__ import annotations

from labkit.traffic.load import (
    AUTO_PROGRESS_N,
    AUTO_PROGRESS_SECONDS,
    ENVOY_LOCAL_REPLIES,
    Resolver,
    _error,
    _flags,
    _Load,
    _version,
    run,
)
from labkit.traffic.results import Outcome, TrafficResult
from labkit.traffic.runner import (
    Stream,
    _Background,
    _done,
    _progress_bar,
    background,
    register,
    send,
    stop,
    stop_all,
)

__all__ = [
    "AUTO_PROGRESS_N",
    "AUTO_PROGRESS_SECONDS",
    "ENVOY_LOCAL_REPLIES",
    "Outcome",
    "Resolver",
    "Stream",
    "TrafficResult",
    "_Background",
    "_Load",
    "_done",
    "_error",
    "_flags",
    "_progress_bar",
    "_version",
    "background",
    "register",
    "run",
    "send",
    "stop",
    "stop_all",
]

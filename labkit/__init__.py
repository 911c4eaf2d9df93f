"""labkit: the helper library behind Mesh Lab's notebooks. Start with ``lab = labkit.open()``."""

from __future__ import annotations

import os
from typing import Any

from labkit.errors import BackendError, LabError
from labkit.lab import Change, Lab, Status

__all__ = ["open", "Lab", "Change", "Status", "LabError"]
__version__ = "0.1.0"

BACKENDS = ("local", "kind", "kube")


def open(backend: str | None = None, **options: Any) -> Lab:  # noqa: A001 - the brief's public name
    """A Lab for ``backend`` (default ``LAB_BACKEND``, else "local"); nothing starts before ``up()``."""
    name = (backend or os.environ.get("LAB_BACKEND") or "local").strip().lower()
    if name == "local":
        from labkit.backends.local import LocalLab  # imported on first use: keeps `import labkit` fast

        return LocalLab(**options)
    if name in ("kind", "kube"):
        from labkit.backends.kind import KubeLab  # imported on first use: keeps `import labkit` fast

        return KubeLab(mode=name, **options)
    raise BackendError(
        f"unknown backend {name!r} (from LAB_BACKEND or labkit.open); use one of {', '.join(BACKENDS)}"
    )

"""How kubectl and istioctl address the lab's cluster (the commands themselves run through labkit.command)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    """How kubectl and istioctl address the lab's cluster: a kubeconfig (None: the user's) and a context."""

    kubeconfig: Path | None = None
    context: str | None = None

    def args(self) -> list[str]:
        return ["--context", self.context] if self.context else []

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)} if self.kubeconfig else {}

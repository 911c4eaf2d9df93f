"""The lab's exceptions: one small class per failure kind; messages name the object and the next step."""

from __future__ import annotations


class LabError(Exception):
    """Base of every error labkit raises on purpose; its message is meant for a trainee to read."""


class ManifestError(LabError):
    """A manifest cannot be read: bad YAML, not a Kubernetes object, a file that does not exist."""


class ValidationError(LabError):
    """Manifests failed validation; ``findings`` holds every problem, errors and warnings alike."""

    def __init__(self, findings: list) -> None:
        self.findings = list(findings)
        errors = [f for f in self.findings if getattr(f, "severity", "error") == "error"]
        lines = "\n".join(f"  {f}" for f in errors)
        super().__init__(f"{len(errors)} validation error(s):\n{lines}")


class UnsupportedError(LabError):
    """The local backend does not implement this Istio kind or field; the kind backend does."""


class CommandError(LabError):
    """An external command (kind, docker, istioctl, kubectl) failed or timed out."""

    def __init__(self, argv: list[str], returncode: int | None, output: str, fix: str = "") -> None:
        self.argv, self.returncode, self.output, self.fix = list(argv), returncode, output, fix
        status = "timed out" if returncode is None else f"exited {returncode}"
        tail = "\n".join(output.strip().splitlines()[-15:])
        msg = f"`{' '.join(argv)}` {status}"
        if tail:
            msg += f":\n{tail}"
        if fix:
            msg += f"\nWhat to do: {fix}"
        super().__init__(msg)


class ToolNotFoundError(LabError):
    """A binary the lab needs (envoy, kind, istioctl, kubectl, docker) is not on PATH."""


class PortInUseError(LabError):
    """A port the lab wants to bind is already taken by another process."""


class BackendError(LabError):
    """The lab's backend is not in the state an operation needs (not up, unhealthy, unknown backend name)."""


class CheckFailed(LabError, AssertionError):
    """A notebook check cell found that a step did not work; the message says what to look at."""

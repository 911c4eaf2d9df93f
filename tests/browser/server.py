"""A real JupyterLab server for browser tests: started on 127.0.0.1 with a random token, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

#: JupyterLab settings that keep pop-ups from covering the page: no news feed, no update check.
QUIET_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLab:
    """``jupyter lab`` serving ``root``; scratch files (settings, logs, runtime) go to ``workdir``."""

    def __init__(self, root: Path, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.workdir = workdir
        self.env = env or {}
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.log = workdir / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None
        self._tree: dict[int, psutil.Process] = {}  # every process of the server's tree seen so far

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """A browser URL for ``path`` that logs in with the token."""
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path}{sep}token={self.token}"

    def start(self, timeout: float = 120) -> None:
        settings = self.workdir / "settings"
        for name, values in QUIET_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
            "IPYTHONDIR": str(self.workdir / "ipython"),
            **self.env,
        }
        argv = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.workdir / 'workspaces'}",
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def api(self, method: str, path: str, timeout: float = 10) -> Any:
        request = urllib.request.Request(
            self.base + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def remember_processes(self) -> None:
        """Note the server's process tree (its kernels), so ``stop`` can end any that outlive it."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                server = psutil.Process(self.proc.pid)
                self._tree.update((p.pid, p) for p in [server, *server.children(recursive=True)])

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the server (it shuts its kernels down), then end by PID whatever of its tree is left."""
        if self.proc is None:
            return
        self.remember_processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        _, alive = psutil.wait_procs(list(self._tree.values()), timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

"""A room on one host: a real JupyterHub (hub/jupyterhub_config.py, configurable-http-proxy from npm) with
three OS users, their servers started through the hub's REST API, the canary lesson's core run in each user's
own kernel over the server's websocket, and the three labs isolated (ports, state, `labkit down` in one).

Needs root (it creates the users with useradd and the hub switches to them) and configurable-http-proxy
(`make hub-deps`); it skips with the reason otherwise."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.hub, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
CHP_LOCAL = REPO / ".ci" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
USERS = [f"mlhub{os.getpid() % 100000}{tag}" for tag in "abc"]
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, whatever http_proxy

# The canary lesson's core, as a trainee's notebook runs it: up, the checkpoint's manifests, traffic, check.
LESSON = """
import json, os
import labkit
from labkit import checks, paths, scenario
lab = labkit.open("local")
lab.up()
for rel in scenario.CHECKPOINTS["canary-90-10"]:
    lab.apply(paths.CLUSTER_CONFIG / rel)
result = lab.send(scenario.URL, n=400)
checks.split_matches(result, {scenario.BASELINE: 90, scenario.CANARY: 10})  # at the lab's level
print("RESULT", json.dumps({"uid": os.getuid(), "state": str(lab.state), "ingress": lab.status().ingress_url,
                             "ports": (lab.state / "ports.json").read_text()}))
"""
STILL_SERVING = """
checks.all_ok(lab.send(scenario.URL, n=40))
print("RESULT", json.dumps({"healthy": lab.status().healthy}))
"""
DOWN_BY_CLI = """
import subprocess, sys
cli = [sys.executable, "-m", "labkit.cli", "down"]
down = subprocess.run(cli, capture_output=True, text=True, timeout=60)
print("RESULT", json.dumps({"rc": down.returncode, "out": down.stdout, "up": lab.status().up}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _usable_by_others(path: Path) -> bool:
    """Every folder above ``path`` lets other users through, and ``path`` itself is readable by them."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents) and bool(
        path.stat().st_mode & stat.S_IROTH
    )


def _shared_python(root: Path) -> str:
    """A Python every test user can run, seeing this project's packages: a venv made from a world-usable
    interpreter of the same minor version, whose .pth adds this venv's site-packages (the project's own
    venv may point at an interpreter under /root, which other users cannot enter)."""
    site_dir, minor = Path(sysconfig.get_paths()["purelib"]), f"{sys.version_info[0]}.{sys.version_info[1]}"
    for needed in (site_dir, REPO):
        if not _usable_by_others(needed):
            pytest.skip(f"{needed} is not readable by other users: put the checkout and venv outside /root")
    candidates = [
        Path(sys._base_executable),
        Path(f"/usr/bin/python{minor}"),
        Path(f"/usr/local/bin/python{minor}"),
    ]
    base = next((p for p in candidates if p.is_file() and _usable_by_others(p)), None)
    if base is None:
        pytest.skip(f"no Python {minor} that other users may run ({', '.join(map(str, candidates))})")
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    pth = Path(sysconfig.get_paths(vars={"base": str(root / "venv")})["purelib"]) / "meshlab-tests.pth"
    pth.write_text(f"import site; site.addsitedir({str(site_dir)!r})\n")
    return str(root / "venv" / "bin" / "python")


@dataclass
class Hub:
    url: str
    token: str

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with _opener.open(request, timeout=30) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else {}

    def start_server(self, user: str, timeout: float = 150) -> None:
        self.api("POST", f"/hub/api/users/{user}/server")
        deadline = time.monotonic() + timeout
        while not (self.api("GET", f"/hub/api/users/{user}")["servers"].get("") or {}).get("ready"):
            assert time.monotonic() < deadline, f"{user}'s server did not become ready in {timeout:g}s"
            time.sleep(1)

    def kernel(self, user: str) -> str:
        return self.api("POST", f"/user/{user}/api/kernels", {"name": "python3"})["id"]

    def execute(self, user: str, kernel: str, code: str, timeout: float = 240) -> dict:
        """Run ``code`` in the user's kernel over the server's websocket; the dict its RESULT line holds."""
        return asyncio.run(asyncio.wait_for(self._execute(user, kernel, code), timeout))

    async def _execute(self, user: str, kernel: str, code: str) -> dict:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = f"{self.url.replace('http', 'ws', 1)}/user/{user}/api/kernels/{kernel}/channels"
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {self.token}"}))
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex}
        content = {"code": code, "silent": False, "store_history": False, "allow_stdin": False}
        header |= {"username": "test", "version": "5.3", "date": ""}
        await ws.write_message(
            json.dumps(
                {
                    "header": header,
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": "shell",
                }
            )
        )
        out, error = [], None
        try:
            while True:
                msg = json.loads(await ws.read_message())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    error = "\n".join(msg["content"]["traceback"])
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    break
        finally:
            ws.close()
        text = "".join(out)
        assert error is None, f"{user}'s kernel failed:\n{text}\n{error}"
        [line] = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
        return json.loads(line.removeprefix("RESULT "))


def _user_processes(uid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids and uids.real == uid:
            out.append(proc)
    return out


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("creates OS users with useradd and runs the hub as root: run as root (CI does)")
    chp = os.environ.get("MESHLAB_CHP") or shutil.which("configurable-http-proxy") or str(CHP_LOCAL)
    if not os.access(chp, os.X_OK):
        pytest.skip("configurable-http-proxy not found: `make hub-deps` installs it with npm")
    if not shutil.which("useradd"):
        pytest.skip("useradd not found (package passwd)")
    shared = Path(f"/opt/meshlab-hub-test-{os.getpid()}")
    shared.mkdir(mode=0o755)
    work = tmp_path_factory.mktemp("hub")
    made: list[str] = []
    hub_proc = None
    try:
        python = _shared_python(shared)
        for user in USERS:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user], check=True, timeout=30)
            made.append(user)
        token, port = secrets.token_hex(32), _free_port()
        config = work / "test_config.py"
        config.write_text(
            f"load_subconfig({str(REPO / 'hub' / 'jupyterhub_config.py')!r})\n"
            f"c.JupyterHub.hub_port = {_free_port()}\n"
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{_free_port()}'\n"
            f"c.ConfigurableHTTPProxy.command = [{chp!r}]\n"
            f"c.JupyterHub.db_url = 'sqlite:///{work}/hub.sqlite'\n"
            f"c.JupyterHub.cookie_secret_file = '{work}/cookie_secret'\n"
            f"c.JupyterHub.pid_file = '{work}/hub.pid'\n"
            "c.JupyterHub.services = [{'name': 'meshlab-test', 'api_token': %r}]\n"
            "c.JupyterHub.load_roles = [{'name': 'meshlab-test', 'services': ['meshlab-test'], 'scopes': "
            "['admin:users', 'admin:servers', 'access:servers']}]\n" % token
        )
        env = {
            **os.environ,
            "MESHLAB_HUB_URL": f"http://127.0.0.1:{port}",
            "MESHLAB_PYTHON": python,
            "MESHLAB_TRAINEES": " ".join(USERS),
        }
        log = (work / "hub.log").open("w")
        hub_proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        hub = Hub(f"http://127.0.0.1:{port}", token)
        deadline = time.monotonic() + 90
        while True:
            try:
                hub.api("GET", "/hub/api/")
                break
            except OSError:
                assert hub_proc.poll() is None, (work / "hub.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the hub did not answer in 90 s"
                time.sleep(0.5)
        yield hub
    finally:
        if hub_proc is not None:
            hub_proc.send_signal(signal.SIGTERM)  # cleanup_servers: the hub stops every user's server
            try:
                hub_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(hub_proc.pid, signal.SIGKILL)
                hub_proc.wait(timeout=10)
        for user in made:
            uid = pwd.getpwnam(user).pw_uid
            state = Path(pwd.getpwnam(user).pw_dir) / ".meshlab"
            if state.is_dir():  # the lab outlives its server, as on a laptop: stop it the trainee's way
                subprocess.run(
                    ["runuser", "-u", user, "--", python, "-m", "labkit.cli", "down"],
                    env={**os.environ, "LAB_STATE": str(state)}, timeout=60, capture_output=True,
                )  # fmt: skip
            for proc in _user_processes(uid):  # anything else of this test's user, by pid
                proc.kill()
            psutil.wait_procs(_user_processes(uid), timeout=10)
            subprocess.run(["userdel", "--remove", user], timeout=30, capture_output=True)
        shutil.rmtree(shared, ignore_errors=True)


def test_three_trainees_run_the_canary_lesson_in_isolated_labs(hub):
    kernels, results = {}, {}
    for user in USERS:
        hub.start_server(user)
        kernels[user] = hub.kernel(user)
    for user in USERS:
        results[user] = hub.execute(user, kernels[user], LESSON)

    for user, got in results.items():
        home = Path(pwd.getpwnam(user).pw_dir)
        assert got["uid"] == pwd.getpwnam(user).pw_uid  # the kernel runs as the trainee
        assert Path(got["state"]) == home / ".meshlab" and Path(got["state"]).stat().st_uid == got["uid"]
        assert (home / "notebooks" / "04-canary-90-10.ipynb").stat().st_uid == got["uid"]  # their own copy
    assert len({got["state"] for got in results.values()}) == 3
    port_sets = {user: set(_ints(json.loads(got["ports"]))) for user, got in results.items()}
    shared = {(a, b): port_sets[a] & port_sets[b] for i, a in enumerate(USERS) for b in USERS[i + 1 :]}
    assert all(port_sets.values()) and not any(shared.values()), (
        shared,
        [r["ports"] for r in results.values()],
    )
    assert len({got["ingress"] for got in results.values()}) == 3

    first, *others = USERS
    down = hub.execute(first, kernels[first], DOWN_BY_CLI)
    assert down["rc"] == 0 and "lab stopped" in down["out"] and down["up"] is False
    for user in others:
        assert hub.execute(user, kernels[user], STILL_SERVING) == {"healthy": True}


def _ints(value) -> list[int]:
    """Every integer in a JSON value (ports.json's layout is the local backend's business)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    if isinstance(value, list):
        return [i for v in value for i in _ints(v)]
    return []

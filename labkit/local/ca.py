"""The local mesh CA: a root (EC P-256) and one SPIFFE workload certificate per proxy, like istiod's CA does.

Envoy reads the files directly (no SDS agent). Keys are written 0600; the root is kept in the state folder and
reused across up() calls, and a workload certificate is reissued when it expires soon or the root changed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labkit.files import write_atomic

ROOT_LIFETIME = dt.timedelta(days=365)
CERT_LIFETIME = dt.timedelta(hours=24)
#: Reissue a workload certificate when less than this is left, so a lab started today still works tomorrow.
RENEW_BEFORE = dt.timedelta(hours=2)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class LocalCA:
    """A root CA kept as ``<dir>/root-cert.pem`` + ``<dir>/root-key.pem``: loaded if there, else created."""

    def __init__(self, directory: Path, trust_domain: str = "cluster.local") -> None:
        self.dir = Path(directory)
        self.cert_file = self.dir / "root-cert.pem"
        self.key_file = self.dir / "root-key.pem"
        if self._usable():
            self.cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.key = key
        else:
            self.key, self.cert = self._create(trust_domain)

    def _usable(self) -> bool:
        if not (self.cert_file.is_file() and self.key_file.is_file()):
            return False
        try:
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        except ValueError:
            return False
        return cert.not_valid_after_utc - _now() > CERT_LIFETIME

    def _create(self, trust_domain: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, "Mesh Lab local root CA"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_atomic(self.key_file, _pem_key(key), 0o600)
        write_atomic(self.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return key, cert

    def issue(self, spiffe_id: str, cert_file: Path, key_file: Path, ca_file: Path | None = None) -> None:
        """Write a fresh workload key + certificate whose only identity is the URI SAN ``spiffe_id``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # like Istio: the identity is the SAN alone, so the SAN is critical
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CERT_LIFETIME)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=True,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        write_atomic(key_file, _pem_key(key), 0o600)
        write_atomic(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        if ca_file is not None:
            write_atomic(ca_file, self.cert_file.read_bytes(), 0o644)

    def ensure(self, spiffe_id: str, cert_file: Path, key_file: Path, ca_file: Path) -> bool:
        """Issue unless a valid certificate for ``spiffe_id`` from this root is there; True if it issued."""
        if self._current(spiffe_id, cert_file, key_file, ca_file):
            return False
        self.issue(spiffe_id, cert_file, key_file, ca_file)
        return True

    def _current(self, spiffe_id: str, cert_file: Path, key_file: Path, ca_file: Path) -> bool:
        if not (cert_file.is_file() and key_file.is_file() and ca_file.is_file()):
            return False
        if ca_file.read_bytes() != self.cert_file.read_bytes():
            return False
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            cert.verify_directly_issued_by(self.cert)
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            return False
        return sans.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe_id] and (
            cert.not_valid_after_utc - _now() > RENEW_BEFORE
        )

"""Kubernetes Secrets as istiod's credentials controller reads them (pilot/pkg/credentials/kube/secrets.go),
for a Gateway server's ``tls.credentialName``: the key and certificate from a generic Secret's ``key`` and
``cert`` or a ``kubernetes.io/tls`` Secret's ``tls.key`` and ``tls.crt``; the client CA (MUTUAL) from the
Secret ``<name>-cacert`` if it exists, else from the Secret itself, key ``cacert`` or ``ca.crt``
(``GetCaCert``, ``extractRoot``). A Secret is looked up in the gateway's namespace only.

On a cluster the gateway fetches them over SDS; here istiod's answer is written inline into the listener
(Envoy's ``inline_string``), so a changed Secret is a changed listener, applied live like any config.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labkit.manifests import Resource

#: ``securitymodel.SdsCaSuffix``: the name suffix of the Secret that holds only a CA.
CA_SUFFIX = "-cacert"


@dataclass(frozen=True)
class Credential:
    """What SDS would serve for one credentialName: PEM text, ``ca`` empty when none was found."""

    cert: str
    key: str
    ca: str


def secrets(resources: list[Resource]) -> dict[tuple[str, str], dict[str, str]]:
    """Every core/v1 Secret's decoded data (``data`` base64, ``stringData`` as is), by (namespace, name)."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for r in resources:
        if r.kind != "Secret" or r.group != "":
            continue
        data = {}
        for key, value in (r.body.get("data") or {}).items():
            try:
                data[key] = base64.b64decode(str(value), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                data[key] = ""  # not usable as PEM: treated as an empty key, as istiod's hasValue does
        data.update({k: str(v) for k, v in (r.body.get("stringData") or {}).items()})
        out[(r.namespace, r.name)] = data
    return out


def lookup(store: dict[tuple[str, str], dict[str, str]], namespace: str, name: str) -> Credential | None:
    """The credential ``name`` in ``namespace``, or None when istiod would find no key and certificate
    (``extractKeyAndCert``: the generic keys first, then the TLS ones)."""
    data = store.get((namespace, name))
    if data is None:
        return None
    for cert_key, key_key in (("cert", "key"), ("tls.crt", "tls.key")):
        if data.get(cert_key) and data.get(key_key):
            return Credential(data[cert_key], data[key_key], ca_of(store, namespace, name))
    return None


def ca_of(store: dict[tuple[str, str], dict[str, str]], namespace: str, name: str) -> str:
    """``GetCaCert`` for ``<name>-cacert``: that Secret when it exists, else ``name`` itself; "" if none."""
    data = store.get((namespace, name + CA_SUFFIX), store.get((namespace, name))) or {}
    return data.get("cacert") or data.get("ca.crt") or ""

"""End-user tokens for notebook 18: an issuer the lab makes (an RSA key generated here, never written to
disk), its public JWKS for a RequestAuthentication's ``jwks``, and JWTs signed with it (joserfc), so the
lesson needs no identity provider and no internet. A token from ``Issuer.token`` is what an OpenID provider
would hand a user: RS256, ``iss``, ``sub``, ``iat``, ``exp``, and any claims asked for (``groups``...)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from labkit import scenario

#: The lesson's issuer: the ``iss`` of its tokens and of the RequestAuthentication's jwtRules.
ISSUER = "https://auth.meshlab.example"


class Issuer:
    """A signing key and the tokens it signs. ``Issuer()`` makes a new key; a second Issuer's tokens fail
    verification against the first one's JWKS (what a forged token looks like)."""

    def __init__(self, issuer: str = ISSUER, kid: str = "meshlab-1"):
        from joserfc.jwk import RSAKey  # cryptography's RSA: only for the JWT lesson (import time)

        self.issuer, self.kid = issuer, kid
        self._key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})

    @property
    def jwks(self) -> str:
        """The public key set as JSON, for a RequestAuthentication's ``jwks`` (no private part)."""
        return json.dumps({"keys": [self._key.as_dict(private=False)]})

    def token(self, sub: str, expires_in: float = 3600, **claims: Any) -> str:
        """A signed JWT for user ``sub``; ``expires_in`` seconds from now (negative: already expired)."""
        from joserfc import jwt  # see __init__

        now = int(time.time())
        payload = {"iss": self.issuer, "sub": sub, "iat": now, "exp": int(now + expires_in), **claims}
        return jwt.encode({"alg": "RS256", "kid": self.kid, "typ": "JWT"}, payload, self._key)

    def request_authentication(
        self, name: str = "jwt", namespace: str = scenario.NAMESPACE, app: str = scenario.SERVICE
    ) -> dict:
        """A RequestAuthentication for the workloads labelled ``app``: tokens of this issuer, keys inline."""
        return {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": {"app": app}},
                "jwtRules": [{"issuer": self.issuer, "jwks": self.jwks}],
            },
        }


def bearer(token: str) -> dict[str, str]:
    """The request header that carries a token, as ``lab.send(..., headers=bearer(token))`` sends it."""
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, decoded but NOT verified (what jwt.io shows): for reading a token, never for
    trusting it; the sidecar verifies the signature."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

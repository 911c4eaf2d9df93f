"""istiod's admission rules for a RequestAuthentication and a Telemetry's access-log filter, as (field,
message, fix) problems (pkg/config/validation/validation.go ``ValidateRequestAuthentication``,
``validateJwtRule``, ``warnPrivateJwksKeys``; validation_istiod.go ``validateTelemetryFilter``)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from labkit.validation.names import Problems


def request_authentication(spec: Mapping) -> Problems:
    for i, rule in enumerate(spec.get("jwtRules") or []):
        yield from _jwt_rule(f"spec.jwtRules[{i}]", rule or {})


def _jwt_rule(field: str, rule: Mapping) -> Problems:
    """An empty issuer or audience is the CRD schema's (minLength) error already; the keys are istiod's."""
    if rule.get("jwks"):
        yield from _jwks(f"{field}.jwks", str(rule["jwks"]))


def _jwks(field: str, text: str) -> Problems:
    """``jwk.Parse``: a JSON Web Key Set (or one key); private keys only warn, Envoy needs the public part."""
    from joserfc.errors import JoseError  # only for a RequestAuthentication (keeps `import labkit` fast)
    from joserfc.jwk import KeySet  # imported on first use: keeps `import labkit` fast

    try:
        data = json.loads(text)
        keys = KeySet.import_key_set(data if "keys" in data else {"keys": [data]})
    except (ValueError, TypeError, KeyError, AttributeError, JoseError) as e:
        yield (
            field,
            f"jwks parse error: {e}; istiod rejects it",
            'paste the issuer\'s JWKS JSON ({"keys": [...]})',
        )
        return
    for i, key in enumerate(keys.keys):
        if key.is_private:
            yield (
                "warning",
                field,
                f"jwks key at index {i} contains private key material; only public keys are used for "
                "verification",
                "inline the public key set only (joserfc: key_set.as_dict(private=False))",
            )


def telemetry(spec: Mapping) -> Problems:
    """Each ``accessLogging[].filter.expression`` must parse as CEL (istiod parses, never evaluates, it)."""
    from celpy import CELParseError, Environment  # only for a Telemetry with a filter (import time)

    for i, entry in enumerate(spec.get("accessLogging") or []):
        expression = ((entry or {}).get("filter") or {}).get("expression")
        if expression is None:
            continue
        try:
            Environment().compile(str(expression))
        except CELParseError as e:
            first = str(e).splitlines()[0] if str(e) else "syntax error"
            yield (
                f"spec.accessLogging[{i}].filter.expression",
                f"must be a valid CEL expression ({first!r} does not parse); istiod rejects it",
                "write a CEL condition on Envoy's attributes, e.g. response.code >= 400",
            )

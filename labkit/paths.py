"""Where the lab's files live: the repository (manifests, sample service) and the state folder (.lab/)."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root: labkit is installed editable from it, so cluster-config/ sits beside the package.
ROOT = Path(os.environ.get("LAB_HOME", Path(__file__).resolve().parent.parent))
CLUSTER_CONFIG = ROOT / "cluster-config"
APPS = CLUSTER_CONFIG / "apps"
MESH = CLUSTER_CONFIG / "mesh"
ISTIO_INSTALL = CLUSTER_CONFIG / "istio" / "install.yaml"
KIND_CONFIG = CLUSTER_CONFIG / "kind" / "cluster.yaml"
SERVICE_DIR = ROOT / "services" / "currency-converter"
NOTEBOOKS = ROOT / "notebooks"


def state_dir() -> Path:
    """The state folder; ``LAB_STATE`` overrides ``.lab/``. The files in it are named by ``labkit.state``."""
    path = Path(os.environ.get("LAB_STATE", ROOT / ".lab"))
    path.mkdir(parents=True, exist_ok=True)
    return path

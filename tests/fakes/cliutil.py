"""What the fake command-line tools share: their state folder, argv flags, and the stand-in API server they
ask what the cluster holds (so istioctl and kubectl answer about the objects labkit applied)."""

from __future__ import annotations

import json
import os
from pathlib import Path

STATE = Path(os.environ.get("FAKE_CLI_DIR", "."))


def flag(args: list[str], name: str, default: str = "") -> str:
    return args[args.index(name) + 1] if name in args else default


def lines(name: str) -> list[str]:
    path = STATE / name
    return path.read_text().split() if path.exists() else []


def api(path: str) -> dict | None:
    """GET an object from the fake API server (None: 404, or no API server in this test)."""
    if not os.environ.get("FAKE_API_SERVER"):
        return None
    import urllib.error  # here: each fake call is a new process, and most ask no API server
    import urllib.request

    try:
        with urllib.request.urlopen(os.environ["FAKE_API_SERVER"] + path, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def deployment_pods(namespace: str, name: str) -> list[dict]:
    deployment = api(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    if deployment is None:
        return []
    labels = deployment["spec"]["selector"].get("matchLabels") or {}
    query = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return (api(f"/api/v1/namespaces/{namespace}/pods?labelSelector={query}") or {}).get("items") or []


def lines_raw(name: str) -> list[str]:
    path = STATE / name
    return path.read_text().splitlines() if path.exists() else []

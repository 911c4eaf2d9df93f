"""Stand-ins for kind, docker, istioctl and kubectl, which this machine cannot run (no Docker engine, no
cluster). Each fake records its argv to ``$FAKE_CLI_DIR/calls.jsonl`` and replays the real tool's documented
output and exit code (see /work/shared/reference/kind-istio-tooling.md); a test can override any answer with
``$FAKE_CLI_DIR/responses.json``: ``[{"tool", "args": [prefix...], "stdout", "stderr", "rc", "sleep"}]``.

They stand in at the process boundary only: labkit runs them exactly as it would run the real tools.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

STATE = Path(os.environ.get("FAKE_CLI_DIR", "."))


def main(tool: str) -> None:
    args = sys.argv[1:]
    with (STATE / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"tool": tool, "args": args}) + "\n")
    stdout, stderr, rc = _override(tool, args) or DEFAULTS[tool](args)
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    sys.exit(rc)


def _override(tool: str, args: list[str]) -> tuple[str, str, int] | None:
    path = STATE / "responses.json"
    for rule in json.loads(path.read_text()) if path.exists() else []:
        words = [a for a in args if not a.startswith("-")]
        if rule["tool"] == tool and words[: len(rule["args"])] == rule["args"]:
            time.sleep(rule.get("sleep", 0))
            return rule.get("stdout", ""), rule.get("stderr", ""), rule.get("rc", 0)
    return None


def _flag(args: list[str], name: str, default: str = "") -> str:
    return args[args.index(name) + 1] if name in args else default


def _lines(name: str) -> list[str]:
    path = STATE / name
    return path.read_text().split() if path.exists() else []


def _write_kubeconfig(path: str, cluster: str) -> None:
    server = os.environ.get("FAKE_API_SERVER", "https://127.0.0.1:6443")
    Path(path).write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: kind-{cluster}, cluster: {{server: '{server}'}}}}]\n"
        f"users: [{{name: kind-{cluster}, user: {{token: fake}}}}]\n"
        f"contexts: [{{name: kind-{cluster}, context: {{cluster: kind-{cluster}, user: kind-{cluster}}}}}]\n"
        f"current-context: kind-{cluster}\n"
    )


def kind(args: list[str]) -> tuple[str, str, int]:
    clusters = _lines("kind-clusters")
    name = _flag(args, "--name", "kind")
    if args[:2] == ["get", "clusters"]:
        return ("".join(c + "\n" for c in clusters), "" if clusters else "No kind clusters found.\n", 0)
    if args[:2] == ["create", "cluster"]:
        if name in clusters:
            msg = (
                f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"'
            )
            msg += "\n"
            return "", msg, 1
        (STATE / "kind-clusters").write_text("\n".join([*clusters, name]) + "\n")
        _write_kubeconfig(_flag(args, "--kubeconfig"), name)
        return (
            "",
            f'Creating cluster "{name}" ...\n ✓ Ensuring node image\nSet kubectl context to "kind-{name}"\n',
            0,
        )
    if args[:2] == ["export", "kubeconfig"]:
        if name not in clusters:
            return "", f'ERROR: unknown cluster "{name}"\n', 1
        _write_kubeconfig(_flag(args, "--kubeconfig"), name)
        return "", f'Set kubectl context to "kind-{name}"\n', 0
    if args[:2] == ["delete", "cluster"]:
        (STATE / "kind-clusters").write_text("".join(c + "\n" for c in clusters if c != name))
        return "", f'Deleting cluster "{name}" ...\n', 0
    if args[:2] == ["load", "docker-image"]:
        image = args[2]
        if image not in _lines("docker-images"):
            return "", f'ERROR: image: "{image}" not present locally\n', 1
        return (
            "",
            f'Image: "{image}" with ID "sha256:0f1e" not yet present on node "{name}-control-plane", '
            "loading...\n",
            0,
        )
    if args[:1] == ["version"]:
        return "kind v0.32.0 go1.24.4 linux/amd64\n", "", 0
    return "", f"ERROR: unknown command {args}\n", 1


def docker(args: list[str]) -> tuple[str, str, int]:
    if (STATE / "docker-down").exists():
        msg = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        msg += "Is the docker daemon running?\n"
        return ("0 0 \n" if args[:1] == ["info"] else ""), msg, 1  # docker info --format prints empty fields
    if args[:1] == ["info"]:
        return os.environ.get("FAKE_DOCKER_INFO", "8 16663109632 28.3.2") + "\n", "", 0
    if args[:1] == ["build"]:
        image = _flag(args, "-t")
        (STATE / "docker-images").write_text("\n".join([*_lines("docker-images"), image]) + "\n")
        return f"Successfully tagged {image}\n", "", 0
    return "", f"docker: unknown command {args}\n", 1


CC = "currency-converter.payments-prod.svc.cluster.local"
ROUTES = [
    {
        "name": "8080",
        "virtualHosts": [
            {
                "name": "currency-converter.payments-prod.svc.cluster.local:8080",
                "domains": ["currency-converter.payments-prod.svc.cluster.local", "currency-converter"],
                "routes": [
                    {
                        "route": {
                            "weightedClusters": {
                                "clusters": [
                                    {
                                        "name": f"outbound|8080|v1|{CC}",
                                        "weight": 90,
                                    },
                                    {
                                        "name": f"outbound|8080|v2|{CC}",
                                        "weight": 10,
                                    },
                                ]
                            }
                        }
                    }
                ],
            }
        ],
    }
]

DESCRIBE = """Pod: {pod}
   Pod Revision: default
   Pod Ports: 8080 (currency-converter), 15090 (istio-proxy)
--------------------
Service: currency-converter
   Port: http 8080/HTTP targets pod port 8080
DestinationRule: currency-converter for "currency-converter"
   Matching subsets: v1
      (Non-matching subsets v2)
   No Traffic Policy
--------------------
Effective PeerAuthentication:
   Workload mTLS mode: STRICT
Applied PeerAuthentication:
   default.payments-prod
"""


def istioctl(args: list[str]) -> tuple[str, str, int]:
    if args[:1] == ["version"]:
        client = {
            "clientVersion": {"version": "1.31.1", "revision": "fake", "status": "Clean", "tag": "1.31.1"}
        }
        if "--remote=false" in args:
            return json.dumps(client) + "\n", "", 0
        mesh = [{"Component": "istiod", "Revision": "default", "Info": {"version": "1.31.1"}}]
        return json.dumps({**client, "meshVersion": mesh}) + "\n", "", 0
    if args[:1] == ["install"]:
        if os.environ.get("FAKE_API_SERVER"):  # leave istiod and the gateway in the fake cluster
            request = urllib.request.Request(
                os.environ["FAKE_API_SERVER"] + "/fake/install-istio", method="POST"
            )
            urllib.request.urlopen(request, timeout=10).close()
        return (
            "✔ Istio core installed ⛵️\n✔ Istiod installed 🧠\n✔ Ingress gateways installed 🛬\n"
            "✔ Installation complete\n",
            "",
            0,
        )
    if args[:1] == ["analyze"]:
        return "[]\n", "", 0
    if args[:2] == ["proxy-config", "routes"]:
        return json.dumps(ROUTES) + "\n", "", 0
    if args[:3] == ["x", "describe", "pod"]:
        return DESCRIBE.format(pod=args[3]), "", 0
    return "", f"Error: unknown command {args}\n", 64


#: A few lines of an istio-proxy's admin ``/stats`` (pilot-agent request GET stats), a histogram among them.
CC_CLUSTER = "cluster.outbound|8080||currency-converter.payments-prod.svc.cluster.local"
STATS = (
    f"{CC_CLUSTER}.upstream_rq_pending_overflow: 7\n{CC_CLUSTER}.upstream_rq_pending_total: 23\n"
    f"{CC_CLUSTER}.upstream_rq_time: P0(nan,1) P25(nan,2)\nserver.live: 1\n"
)


def kubectl(args: list[str]) -> tuple[str, str, int]:
    if args[:1] == ["version"]:
        return (
            json.dumps({"clientVersion": {"major": "1", "minor": "36", "gitVersion": "v1.36.1"}}) + "\n",
            "",
            0,
        )
    words = args[args.index("--") + 1 :] if "--" in args else []
    if "exec" in args and words[:2] == ["python", "load.py"]:
        n = int(_flag(words, "--n", "10"))
        rows = [
            {
                "t": 1764250000.0 + i * 0.01,  # load.py prints wall-clock time.time()
                "status": 200,
                "version": "v2" if i % 10 == 9 else "v1",
                "latency": 0.004,
                "error": None,
            }
            for i in range(n)
        ]
        return "".join(json.dumps(r) + "\n" for r in rows), "", 0
    if "exec" in args and words == ["pilot-agent", "request", "GET", "stats"]:
        return STATS, "", 0
    return "", f"error: unknown command {args}\n", 1


DEFAULTS = {"kind": kind, "docker": docker, "istioctl": istioctl, "kubectl": kubectl}

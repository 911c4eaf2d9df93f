"""Small helpers the notebooks call between steps: show a manifest before applying it, change a
workload's settings, show the kubectl/istioctl command of a step (run for real where Kubernetes is).

The notebooks stay thin: every step is one ``lab.*`` call, every check one ``labkit.checks`` call, and
anything that needs more than a line of code lives here.
"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from labkit import paths, scenario
from labkit.errors import LabError
from labkit.manifests import display_source, load

if TYPE_CHECKING:
    from labkit.lab import Change, Lab

#: The URL every lesson calls: the service's in-mesh name, resolved by the caller's sidecar.
URL = scenario.URL
#: The stand-in external API of the egress lesson (a ServiceEntry host, not a Kubernetes Service).
FX_RATES_URL = "http://api.fxrates.example/rates"


def manifest_path(name: str | Path) -> Path:
    """``"mesh/peer-authentication-strict.yaml"`` -> its path under ``cluster-config/``; absolute paths
    as given.

    Example:
        >>> lesson.manifest_path("mesh/peer-authentication-strict.yaml").name
        'peer-authentication-strict.yaml'
    """
    path = Path(name)
    if not path.is_absolute():
        path = paths.CLUSTER_CONFIG / path
    if not path.is_file():
        raise LabError(
            f"{name}: no such manifest under cluster-config/; check the file name (ls cluster-config/*)"
        )
    return path


def show(name: str | Path) -> Path:
    """Print a manifest from ``cluster-config/`` (comments included: they explain why) and return its path;
    ``lab.apply(path)`` then prints the kubectl command it stands for on a cluster.

    Example:
        >>> path = lesson.show("mesh/peer-authentication-strict.yaml")
        >>> lab.apply(path)
    """
    path = manifest_path(name)
    print(f"# --- {display_source(str(path))} ---")
    print(path.read_text(encoding="utf-8").rstrip())
    return path


def show_object(body: dict) -> dict:
    """Print a manifest made in the notebook (a RequestAuthentication holding a key made here) as YAML and
    return it for ``lab.apply``, which prints the kubectl command it stands for (``kubectl apply -f -``)."""
    import yaml  # with lesson.show's file text, the only YAML this module prints

    print(f"# --- {body['kind']} {body['metadata']['name']} (made in this notebook) ---")
    print(yaml.safe_dump(body, sort_keys=False, width=100).rstrip())
    return body


def command(lab: Lab, line: str, timeout: float = 60) -> None:
    """The kubectl/istioctl command of this step, printed as ``$ line``: on kind (and kube) it runs for real
    and its output follows; on the local backend, which has no Kubernetes, it is the line to type on a
    cluster (``LAB_BACKEND=kind`` runs it), and the cell answers the same question from the lab beside it.

    Example:
        >>> lesson.command(lab, f"kubectl get virtualservice -n {scenario.NAMESPACE}")
    """
    print(f"$ {line}")
    if lab.backend in ("kind", "kube"):
        run(line, timeout)
    else:
        print(f"  (a Kubernetes command: it runs on the kind backend; this is the {lab.backend} backend)")


def with_env(deployment: str, namespace: str = scenario.NAMESPACE, **env: str) -> dict:
    """The Deployment ``deployment`` from ``cluster-config/apps/`` with some environment variables changed.

    Applying it restarts that workload with the new settings (the sample service's FAIL_RATE and
    DELAY_MS knobs).

    Example:
        >>> lab.apply(lesson.with_env("currency-converter-v2", FAIL_RATE="0.5"))
    """
    for resource in load(paths.APPS):
        if resource.kind == "Deployment" and resource.name == deployment and resource.namespace == namespace:
            body = copy.deepcopy(resource.body)
            container = body["spec"]["template"]["spec"]["containers"][0]
            variables = container.setdefault("env", [])
            for key, value in env.items():
                for var in variables:
                    if var.get("name") == key:
                        var.pop("valueFrom", None)
                        var["value"] = str(value)
                        break
                else:
                    variables.append({"name": key, "value": str(value)})
            return body
    raise LabError(f"no Deployment {namespace}/{deployment} in cluster-config/apps/; check the name")


def run(command: str, timeout: float = 60) -> str:
    """Run a shell command a step shows (kubectl, istioctl) on kind, print its output and return it.

    Example:
        >>> lesson.run(f"kubectl get pods -n {scenario.NAMESPACE}")
    """
    from labkit.command import run  # imported on first use: keeps `import labkit` fast

    done = run(shlex.split(command), timeout=timeout)  # CommandError names the command, exit code and output
    output = (done.stdout + done.stderr).rstrip()
    print(output)
    return output


def install_settings(path: str | Path | None = None) -> dict[str, str | None]:
    """The install choices notebook 01 teaches, read from ``cluster-config/istio/install.yaml``: the
    profile, where access logs go, and the outbound traffic policy (the local backend reads the same file)."""
    from labkit.mesh import load_mesh_settings  # imported on first use: keeps `import labkit` fast

    mesh = load_mesh_settings(Path(path) if path else paths.ISTIO_INSTALL)
    return {
        "profile": mesh.profile,
        "access_log": mesh.access_log_file,
        "outbound": mesh.outbound_policy,
        "trust_domain": mesh.trust_domain,
    }


def set_env(lab: Lab, deployment: str, namespace: str = scenario.NAMESPACE, **env: str) -> list[Change]:
    """Apply ``with_env(...)``; ``apply`` returns once the workload runs with the new settings (any backend).

    Example:
        >>> lesson.set_env(lab, "currency-converter-v2", FAIL_RATE="0.5")   # v2 fails half of its calls
        >>> lesson.set_env(lab, "currency-converter-v2", FAIL_RATE="0")     # healthy again
    """
    body = with_env(deployment, namespace, **env)
    # every variable with a value, not only those named: the others go back to the manifest's (FAIL_RATE=0)
    variables = body["spec"]["template"]["spec"]["containers"][0]["env"]
    settings = " ".join(f"{v['name']}={v['value']}" for v in variables if "value" in v)
    print(f"# on a cluster: kubectl set env deployment/{deployment} -n {namespace} {settings}")
    changes = lab.apply(body, quiet=True)
    for change in changes:
        print(change)
    return changes

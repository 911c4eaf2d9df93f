# JupyterHub for a Mesh Lab room on one host: each trainee is a local OS user with their own JupyterLab
# and their own lab on the local backend (real Envoys on 127.0.0.1, state in ~/.meshlab), so a trainee needs
# only a browser and the host needs no Docker. docs/instructors.md has the whole recipe; in short, as root:
#
#   python3 -m venv /opt/meshlab/venv && /opt/meshlab/venv/bin/pip install "/opt/meshlab/repo[test]"
#   npm install -g configurable-http-proxy
#   for i in $(seq -w 1 30); do useradd -m "trainee$i"; echo "trainee$i:<password>" | chpasswd; done
#   MESHLAB_TRAINEES="$(echo trainee{01..30})" /opt/meshlab/venv/bin/jupyterhub -f hub/jupyterhub_config.py
#
# The venv and the repository must be readable by every trainee (not under /root). Settings come from the
# environment so tests and rooms use this same file: MESHLAB_HUB_URL, MESHLAB_PYTHON, MESHLAB_TRAINEES,
# MESHLAB_ADMINS.
import os
import pwd
import shutil
import sys
from pathlib import Path

c = get_config()  # noqa: F821 - JupyterHub defines get_config when it loads this file

REPO = Path(__file__).resolve().parent.parent
#: The Python every trainee's server and kernel run with: the venv the lab is installed in.
PYTHON = os.environ.get("MESHLAB_PYTHON", sys.executable)

# Loopback by default: put a TLS reverse proxy (or `--ssl-cert/--ssl-key`) in front for a real room.
c.JupyterHub.bind_url = os.environ.get("MESHLAB_HUB_URL", "http://127.0.0.1:8000")
c.JupyterHub.hub_ip = "127.0.0.1"

# Who: the OS users the instructor created, logging in with their passwords (PAM, JupyterHub's default).
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_users = set(os.environ.get("MESHLAB_TRAINEES", "").split())
c.Authenticator.admin_users = set(os.environ.get("MESHLAB_ADMINS", "").split())

# Each trainee's JupyterLab is a process running as that user (the hub runs as root to switch users).
c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
c.Spawner.cmd = [PYTHON, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab/tree/notebooks/00-welcome-and-preflight.ipynb"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90


def _home(spawner) -> str:
    return pwd.getpwnam(spawner.user.name).pw_dir


# The lab's state (certificates, Envoy config, pidfiles, logs) in the trainee's home: one lab per trainee,
# ports picked free by each lab, so labs never meet. LAB_HOME is the shared, read-only repository.
c.Spawner.environment = {
    # the venv's bin first, so `labkit status` / `labkit reset` work in a trainee's JupyterLab terminal
    "PATH": os.pathsep.join([str(Path(PYTHON).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
    "LAB_BACKEND": "local",
    "LAB_HOME": str(REPO),
    "LAB_STATE": lambda spawner: os.path.join(_home(spawner), ".meshlab"),
    "LAB_CACHE": lambda spawner: os.path.join(_home(spawner), ".cache", "meshlab"),
}


def copy_notebooks(spawner) -> None:
    """Each trainee's own copy of the notebooks, made on first start (theirs to edit, never overwritten)."""
    user = pwd.getpwnam(spawner.user.name)
    target = Path(user.pw_dir) / "notebooks"
    if target.exists():
        return
    shutil.copytree(REPO / "notebooks", target)
    for path in [target, *target.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)


c.Spawner.pre_spawn_hook = copy_notebooks

# Stopping the hub stops every trainee's server; their labs' Envoys keep running until `labkit down` (the
# clean-up notebook), as on a laptop, so a restarted kernel finds its lab again.
c.JupyterHub.cleanup_servers = True

"""A container's cgroup v2 files as ``cat`` prints them inside it, for the fake ``kubectl exec``
(Documentation/admin-guide/cgroup-v2.rst formats): what labkit/kind/usage.py reads for a proxy's CPU and
memory on kind."""

from __future__ import annotations

import os
from pathlib import Path

STATE = Path(os.environ.get("FAKE_CLI_DIR", "."))

#: What each read of a container's cgroup v2 files adds (CPU) or shows (memory), so a test knows the figures.
CPU_USEC_PER_READ, MEMORY_CURRENT, INACTIVE_FILE = 20_000, 70 * 2**20, 10 * 2**20


def read(key: str, files: list[str]) -> tuple[str, str, int]:
    """``cat`` of cgroup v2 files inside a container (Documentation/admin-guide/cgroup-v2.rst formats):
    ``usage_usec`` grows by CPU_USEC_PER_READ on every read of that container."""
    counter = STATE / f"cgroup-{key}"
    reads = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(reads))
    usec = reads * CPU_USEC_PER_READ
    text = {
        "/sys/fs/cgroup/cpu.stat": f"usage_usec {usec}\nuser_usec {usec * 3 // 4}\nsystem_usec {usec // 4}\n",
        "/sys/fs/cgroup/memory.current": f"{MEMORY_CURRENT}\n",
        "/sys/fs/cgroup/memory.stat": f"anon {50 * 2**20}\ninactive_file {INACTIVE_FILE}\n",
    }
    missing = [f for f in files if f not in text]
    if missing:
        return "", f"cat: {missing[0]}: No such file or directory\n", 1
    return "".join(text[f] for f in files), "", 0

"""Writing the lab's files so a reader in another process (Envoy, a second kernel) never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int | None = None) -> bool:
    """Replace ``path`` by a rename in its directory (what Envoy's watcher reacts to; readers never see half
    a file); False if unchanged. The temporary file has a unique name (two kernels may write the same file);
    it is created 0600 and gets ``mode`` (default 0644) before the rename, so a key is never readable by
    others."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o644 if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True

"""What the lab's load tool (services/currency-converter/load.py) prints, for the fakes that stand in for the
pods it runs in (``kubectl exec`` and an ephemeral container): one JSON line per request, ``t`` a wall-clock
time, a 90/10 v1/v2 split like the lesson's canary; for a ``tcp://`` URL one line per connection, as load.py
prints its echoes (status null, version the echo's prefix). ``$FAKE_LOAD_RPS`` is the most the pod can
send: an ``--open-loop --duration D`` run asked for more ends on time with only what it could send, as
load.py does."""

from __future__ import annotations

import json
import os


def output(argv: list[str]) -> str:
    """load.py's stdout for ``argv`` (``... load.py --url U --n N ...``); refuses a command without --url."""
    if "--url" not in argv:
        raise ValueError("load.py: error: the following arguments are required: --url")
    n = int(argv[argv.index("--n") + 1]) if "--n" in argv else 10
    qps = float(argv[argv.index("--qps") + 1]) if "--qps" in argv else 100.0
    capacity = float(os.environ.get("FAKE_LOAD_RPS", "inf"))
    if "--open-loop" in argv and "--duration" in argv and qps > capacity:
        n = min(n, int(capacity * float(argv[argv.index("--duration") + 1])))
    step = 1 / min(qps, capacity)
    tcp = argv[argv.index("--url") + 1].startswith("tcp://")  # one connection per row: no HTTP status
    rows = [
        {
            "t": 1764250000.0 + i * step,  # load.py prints wall-clock time.time()
            "status": None if tcp else 200,
            "version": "v2" if i % 10 == 9 else "v1",
            "latency": 0.004,
            "error": None,
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)

"""The ``labkit`` command: the notebooks' API from a shell, plus validate, doctor, tools and tour."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence

from labkit import lesson, scenario
from labkit.errors import LabError
from labkit.scenario import CHECKPOINTS


def _lab(args: argparse.Namespace):
    import labkit  # on first use: keeps other labkit commands fast

    return labkit.open(args.backend)


def _print_changes(changes) -> None:
    for change in changes:
        print(change)


def cmd_up(args):
    print(_lab(args).up())


def cmd_down(args):
    _lab(args).down()
    print("lab stopped")


def cmd_status(args):
    status = _lab(args).status()
    print(status)
    return 0 if status.healthy else 1


def cmd_apply(args):
    lab = _lab(args)
    for path in args.paths:
        _print_changes(lab.apply(path))


def cmd_delete(args):
    lab = _lab(args)
    for path in args.paths:
        _print_changes(lab.delete(path))


def cmd_apply_sample(args):
    from labkit import samples  # only this command reads an Istio release

    home = samples.istio_home(home=args.istio_home)
    lab = _lab(args)
    for name in args.names:
        for source in samples.sources(name, home):
            _print_changes(lab.apply(source))


def cmd_weights(args):
    lab = _lab(args)
    _print_changes(
        lab.set_weights(args.service, namespace=args.namespace, api=args.api, **_weights(args.weights))
    )


def _headers(items: Sequence[str]) -> dict[str, str]:
    """``-H 'name: value'`` options as a header dict (curl's spelling)."""
    headers = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise LabError(f"header {item!r} is not 'Name: value'. What to do: write it as -H 'x-beta: yes'")
        headers[name.strip()] = value.strip()
    return headers


def _weights(items: Sequence[str]) -> dict[str, int]:
    weights = {}
    for item in items:
        subset, _, value = item.partition("=")
        if not value.isdigit():
            raise LabError(f"weight {item!r} is not SUBSET=INTEGER. What to do: write it as v1=90 v2=10")
        weights[subset] = int(value)
    return weights


def cmd_send(args):
    """Send, then print the split with its 99.9 % intervals, the status codes and Envoy's response flags;
    with --expect, exit 1 when the split is not consistent with those weights."""
    from labkit.stats import LEVEL  # here: scipy's import would slow every other labkit command

    expect, headers = _weights(args.expect) if args.expect else None, _headers(args.header)
    result = _lab(args).send(
        args.url, n=args.n, qps=args.qps, source=args.source, concurrency=args.concurrency, headers=headers
    )
    print(result.summary())
    report = result.report(expect)  # at the lab's one level, stats.CONFIDENCE
    if report.n:
        shares = ", ".join(f"{v} {s.low:.1%}-{s.high:.1%}" for v, s in sorted(report.shares.items()))
        print(f"  {LEVEL} intervals: {shares}")
    flags = Counter(o.flags for o in result.outcomes if o.flags and o.flags != "-")
    print("  flags: " + (", ".join(f"{f}: {k}" for f, k in sorted(flags.items())) or "none"))
    if expect:
        print("  " + report.verdict())
        return 0 if report.consistent else 1
    return 0


def cmd_proxy_status(args):
    """Each proxy's sync state with the control plane (istioctl proxy-status); exit 1 unless all SYNCED."""
    from labkit.status import proxy_status_table  # on first use: keeps other labkit commands fast

    rows = _lab(args).proxy_status()
    print(proxy_status_table(rows))
    return 0 if all(r.synced for r in rows) else 1


def cmd_proxy_config(args):
    """What the workload's Envoy runs: routes as a table (weights included), anything else as JSON."""
    from labkit import tables  # on first use: keeps other labkit commands fast

    config = _lab(args).proxy_config(args.workload, args.what)
    lines = tables.routes(config) if args.what == "routes" and args.output == "table" else None
    if lines is None:
        print(json.dumps(config, indent=2, sort_keys=True))
    else:
        print("\n".join(lines) if lines else f"{args.workload} runs no routes")


def cmd_get(args):
    """``kubectl get``: what the lab has applied of one kind, in one namespace or all."""
    from labkit import tables  # on first use: keeps other labkit commands fast

    # the backend reads the kind's name; nothing found reads as kubectl's words
    tables.print_resources(_lab(args).get(args.kind, namespace=args.namespace), args.namespace)


def cmd_reset(args):
    _print_changes(_lab(args).reset(args.checkpoint))
    print(f"lab at {args.checkpoint or 'the bare apps (no Istio configuration)'}")


def cmd_validate(args):
    from labkit import validation  # on first use: keeps other labkit commands fast

    return validation.main(args.paths)


def cmd_doctor(args):
    if (args.backend or os.environ.get("LAB_BACKEND") or "local").strip().lower() == "local":
        from labkit.local import doctor  # on first use: keeps other labkit commands fast
    else:
        from labkit.kind import doctor  # type: ignore[no-redef]

    return doctor.main(args)


def cmd_tools(args):
    from labkit.kind import tools  # on first use: keeps other labkit commands fast

    return tools.main(args)


def cmd_tour(args):
    from labkit import tour  # on first use: keeps other labkit commands fast

    return tour.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="Mesh Lab: an Istio teaching lab.")
    parser.add_argument("--backend", help="local (default), kind or kube; default from LAB_BACKEND")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the mesh and the lab's workloads").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything the lab started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="what runs and what is wrong").set_defaults(func=cmd_status)
    for name, func, helptext in (
        ("apply", cmd_apply, "apply manifests"),
        ("delete", cmd_delete, "delete manifests"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("paths", nargs="+")
        p.set_defaults(func=func)
    p = sub.add_parser(
        "apply-sample",
        help="apply Istio's own sample from ISTIO_HOME into `default`, e.g. `labkit apply-sample bookinfo`",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="bookinfo, helloworld, httpbin, curl, or a file")
    p.add_argument("--istio-home", help="the Istio release folder (default: ISTIO_HOME)")
    p.set_defaults(func=cmd_apply_sample)
    p = sub.add_parser(
        "weights", help="set the canary weights, e.g. `labkit weights currency-converter v1=90 v2=10`"
    )
    p.add_argument("service")
    p.add_argument("weights", nargs="+", metavar="SUBSET=WEIGHT")
    p.add_argument("--namespace", default=scenario.NAMESPACE)
    p.add_argument(
        "--api", choices=("istio", "gateway"), default="istio", help="write a VirtualService or an HTTPRoute"
    )
    p.set_defaults(func=cmd_weights)
    p = sub.add_parser(
        "send",
        help="send requests and print the split, e.g. `labkit send http://orders.shop:9000/ --from shop/web`",
    )
    p.add_argument("url", nargs="?", default=lesson.URL)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--qps", type=float)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--from", "--source", dest="source", default="client",
        help="the sending workload: namespace/workload, a unique workload name, or client, legacy, ingress",
    )  # fmt: skip
    p.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'")
    p.add_argument("--expect", nargs="+", metavar="SUBSET=WEIGHT", help="exit 1 unless the split fits these")
    p.set_defaults(func=cmd_send)
    sub.add_parser(
        "proxy-status", help="is every proxy in sync with the control plane (SYNCED, STALE, NACK)"
    ).set_defaults(func=cmd_proxy_status)
    p = sub.add_parser(
        "proxy-config", help="what a workload's Envoy runs, e.g. `labkit proxy-config shop/web routes`"
    )
    p.add_argument("workload")
    p.add_argument("what", choices=["routes", "clusters", "listeners", "endpoints", "secrets"])
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_proxy_config)
    p = sub.add_parser(
        "get", help="list what is applied, e.g. `labkit get vs -n shop` (short names as kubectl)"
    )
    p.add_argument("kind", help="vs, dr, pa, se, gw, deploy, svc, sa, ns, or the full plural name")
    p.add_argument("-n", "--namespace", help="one namespace (default: all)")
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("reset", help="back to exactly a checkpoint: leftovers deleted, edits undone")
    p.add_argument("checkpoint", nargs="?", choices=list(CHECKPOINTS), help="default: no Istio configuration")
    p.set_defaults(func=cmd_reset)
    p = sub.add_parser("validate", help="validate manifests; exit 1 on errors")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("doctor", help="preflight checks for the backend (Envoy for local; Docker, kind...)")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("tools", help="manage pinned kind/istioctl binaries")
    p.add_argument("action", choices=["install"])
    p.set_defaults(func=cmd_tools)
    p = sub.add_parser("tour", help="run the core lesson headless and write an HTML report")
    p.add_argument("--report", default="artifacts/tour.html")
    p.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    p.set_defaults(func=cmd_tour)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LabError as exc:
        print(f"labkit {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

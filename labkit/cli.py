"""The ``labkit`` command: the notebooks' API from a shell, plus validate, doctor, tools and tour."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from labkit import lesson
from labkit.errors import LabError
from labkit.scenario import CHECKPOINTS


def _lab(args: argparse.Namespace):
    import labkit

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


def cmd_weights(args):
    weights = {}
    for item in args.weights:
        subset, _, value = item.partition("=")
        if not value.isdigit():
            raise LabError(f"weight {item!r} is not SUBSET=INTEGER (for example v1=90 v2=10)")
        weights[subset] = int(value)
    _print_changes(_lab(args).set_weights(args.service, namespace=args.namespace, **weights))


def cmd_send(args):
    result = _lab(args).send(
        args.url, n=args.n, qps=args.qps, source=args.source, concurrency=args.concurrency
    )
    print(result.summary())


def cmd_reset(args):
    _print_changes(_lab(args).reset(args.checkpoint))
    print(f"lab at {args.checkpoint or 'the bare apps (no Istio configuration)'}")


def cmd_validate(args):
    from labkit import validation

    return validation.main(args.paths)


def cmd_doctor(args):
    from labkit.kind import doctor

    return doctor.main(args)


def cmd_tools(args):
    from labkit.kind import tools

    return tools.main(args)


def cmd_tour(args):
    from labkit import tour

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
        "weights", help="set the canary weights, e.g. `labkit weights currency-converter v1=90 v2=10`"
    )
    p.add_argument("service")
    p.add_argument("weights", nargs="+", metavar="SUBSET=WEIGHT")
    p.add_argument("--namespace", default="payments-prod")
    p.set_defaults(func=cmd_weights)
    p = sub.add_parser("send", help="send requests and print the split")
    p.add_argument(
        "url",
        nargs="?",
        default=lesson.URL,
    )
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--qps", type=float)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--source", default="client", choices=["client", "legacy", "ingress"])
    p.set_defaults(func=cmd_send)
    p = sub.add_parser("reset", help="back to exactly a checkpoint: leftovers deleted, edits undone")
    p.add_argument("checkpoint", nargs="?", choices=list(CHECKPOINTS), help="default: no Istio configuration")
    p.set_defaults(func=cmd_reset)
    p = sub.add_parser("validate", help="validate manifests; exit 1 on errors")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("doctor", help="preflight checks for the kind backend")
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

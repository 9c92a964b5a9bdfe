"""The `slipway` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from slipway_operator import __version__

STATE = Path(".slipway")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slipway", description="From raw data to a monitored inference service.")
    parser.add_argument("--version", action="version", version=f"slipway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run_parser = commands.add_parser("run", help="run the journey in manifests on this machine (no cluster needed)")
    run_parser.add_argument(
        "-f", "--filename", action="append", type=Path, required=True, help="a manifest file or folder"
    )
    run_parser.add_argument(
        "--store", default=None, help="artifact store URI (any fsspec URL; default .slipway/artifacts)"
    )
    run_parser.add_argument("--state", type=Path, default=STATE, help="where resources, logs and the report go")
    run_parser.add_argument(
        "--detach", action="store_true", help="return once serving; `slipway down` stops the server"
    )
    run_parser.add_argument("--no-serve", action="store_true", help="skip ModelDeployments")
    run_parser.add_argument("--no-report", action="store_true", help="do not write the HTML report")

    for name, text in (
        ("get", "list the resources of `slipway run`"),
        ("down", "stop what `slipway run` left running"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--state", type=Path, default=STATE)
    for name, text in (
        ("describe", "a resource's diagnosis, timeline, status, conditions and events (local or on a cluster)"),
        ("logs", "a run's log, kept with its artifacts (local or on a cluster, after its RayCluster is gone)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("name", help="NAME or Kind/NAME")
        sub.add_argument("--state", type=Path, default=STATE, help="the state folder of `slipway run`")
        sub.add_argument("-n", "--namespace", default=None, help="on a cluster: the namespace (default: the context's)")
        sub.add_argument("--kubeconfig", default=None, help="on a cluster: the kubeconfig (default: KUBECONFIG)")
        sub.add_argument("--context", default=None, help="on a cluster: the kubeconfig context")
        if name == "logs":
            sub.add_argument("-f", "--follow", action="store_true", help="keep printing until the run has finished")
            sub.add_argument("--worker", type=int, default=None, metavar="N", help="only training worker N's lines")

    demo_parser = commands.add_parser("demo", help="the Fashion-MNIST journey, shrunk to minutes (`make demo`)")
    demo_parser.add_argument("--state", type=Path, default=STATE / "demo")

    op = commands.add_parser("operator", help="run the operator against the current kubeconfig's cluster")
    op.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    op.add_argument("--store", default=None, help="artifact store URI, e.g. s3://slipway (env SLIPWAY_STORE)")
    op.add_argument("--image", default=None, help="trainer image for the RayJob pods (env SLIPWAY_IMAGE)")
    op.add_argument(
        "--server-image",
        default=None,
        help="serving-only image for ONNX models' servers (env SLIPWAY_SERVER_IMAGE; default: --image)",
    )
    op.add_argument(
        "--backend",
        choices=["kubernetes", "local"],
        default="kubernetes",
        help="kubernetes: RayJobs (KubeRay) and Deployments; local: the same workloads as processes on this machine",
    )
    op.add_argument("--state", default=None, help="the local backend's folder (default .slipway/state)")
    op.add_argument(
        "--metrics-address", default=None, metavar="HOST:PORT", help="serve the operator's Prometheus metrics here"
    )
    op.add_argument(
        "--allow-file-uris",
        action="store_true",
        help="accept file:// URIs in specs on the kubernetes backend (every node mounts the same path)",
    )
    op.add_argument("--log-format", choices=["plain", "json"], default="plain", help="json: one JSON object per line")
    args = parser.parse_args(argv)

    if args.command == "run":
        return run_journey(args)
    if args.command == "get":
        return get(args.state)
    if args.command in ("describe", "logs"):
        return inspect(args)
    if args.command == "down":
        from slipway_operator.run import down

        print(f"stopped the processes of {down(args.state)} resource(s)")
        return 0
    if args.command == "demo":
        from slipway_operator.demo import demo

        return demo(args.state)
    return run_operator(
        args.namespace,
        {
            "SLIPWAY_STORE": args.store,
            "SLIPWAY_IMAGE": args.image,
            "SLIPWAY_SERVER_IMAGE": args.server_image,
            "SLIPWAY_ALLOW_FILE_URIS": "true" if args.allow_file_uris else None,
            "SLIPWAY_BACKEND": args.backend,
            "SLIPWAY_STATE": args.state,
            "SLIPWAY_METRICS_ADDRESS": args.metrics_address,
        },
        json_logs=args.log_format == "json",
    )


def run_journey(args: argparse.Namespace) -> int:
    from slipway_operator.run import Journey, Options, RunError, load

    try:
        manifests = load(args.filename)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    options = Options(
        state=args.state,
        store=args.store,
        serve=not args.no_serve,
        detach=args.detach,
        report=not args.no_report,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,  # MLflow's own variable, as its client reads it
    )
    return Journey(options).run(manifests)


def _store(state: Path) -> Any:
    from slipway_operator.localstore import LocalStore

    return LocalStore(state)


def get(state: Path) -> int:
    store = _store(state)
    rows = [("KIND", "NAME", "PHASE", "PROGRESS / RESULT", "CREATED")]
    for obj in sorted(store.objects.values(), key=lambda o: (o["kind"], o["metadata"]["name"])):
        status = obj.get("status") or {}
        shown = status.get("keyMetric") or status.get("progress") or status.get("endpoint") or ""
        rows.append(
            (obj["kind"], obj["metadata"]["name"], status.get("phase", ""), shown, obj["metadata"]["creationTimestamp"])
        )
    if len(rows) == 1:
        print(f"no resources in {state}: run `slipway run -f <manifests>` first")
        return 0
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def inspect(args: argparse.Namespace) -> int:
    """`describe` or `logs` of a resource of `slipway run` (found in --state), else of the cluster the kubeconfig
    names (-n, --kubeconfig or --context ask for the cluster)."""
    from slipway_operator import describe

    on_cluster = bool(args.namespace or args.kubeconfig or args.context)
    store = _store(args.state) if args.state.exists() and not on_cluster else None
    obj = store.find(args.name) if store is not None else None
    try:
        if obj is None:
            if store is not None and not os.environ.get("KUBECONFIG") and not (Path.home() / ".kube/config").exists():
                print(f"error: no single resource named {args.name!r} in {args.state} (see `slipway get`)",
                      file=sys.stderr)  # fmt: skip
                return 1
            view = describe.ClusterView(args.kubeconfig, args.context, args.namespace)
            if args.command == "describe":
                return describe.cluster_describe(view, args.name)
            return describe.cluster_logs(view, args.name, args.follow, args.worker)
        assert store is not None
        if args.command == "describe":
            sys.stdout.write(describe.describe_text(obj, store.events(obj["kind"], obj["metadata"]["name"])))
            return 0
        return local_logs(args.state, obj, args.follow, args.worker)
    except describe.NotFound as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def local_logs(state: Path, obj: dict[str, Any], follow: bool, worker: int | None) -> int:
    from slipway_operator import describe
    from slipway_operator.run import log_path

    path = log_path(state, obj)
    if path is None or not path.exists():
        print(f"{obj['kind']}/{obj['metadata']['name']} has no log yet (it has not started)", file=sys.stderr)
        return 1
    if not follow:
        sys.stdout.write(describe.worker_lines(describe.log_text(path.read_bytes()), worker))
        return 0
    ref = f"{obj['kind']}/{obj['metadata']['name']}"

    def finished() -> bool:
        found = _store(state).find(ref) or {}
        return str((found.get("status") or {}).get("phase")) in describe.TERMINAL

    describe.follow(path.read_bytes, finished, sys.stdout, worker, 2.0)
    return 0


def run_operator(namespaces: list[str], environment: dict[str, str | None], json_logs: bool = False) -> int:
    """The Kopf operator in this process (Ctrl-C or SIGTERM stops it). The flags, over the environment, make
    the Settings the handlers get through Kopf's memo; a malformed one is an error before anything starts."""
    import os

    import kopf

    from slipway_operator.controllers.common import Settings

    try:
        settings = Settings.from_env({**os.environ, **{k: v for k, v in environment.items() if v}})
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import slipway_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.PLAIN)
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces, memo=kopf.Memo(settings=settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

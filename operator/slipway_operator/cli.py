"""The `slipway` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slipway_operator import __version__
from slipway_operator.demo import DEMO_MANIFESTS, DEMO_STORE, demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slipway", description="From raw data to a monitored inference service.")
    parser.add_argument("--version", action="version", version=f"slipway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser("demo", help="run the main job on this machine (what exists so far)")
    demo_parser.add_argument("--manifests", type=Path, default=DEMO_MANIFESTS, help="folder of the journey")
    demo_parser.add_argument("--store", type=Path, default=DEMO_STORE, help="where artifacts go (default .slipway/)")
    op = commands.add_parser("operator", help="run the operator against the current kubeconfig's cluster")
    op.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    op.add_argument("--store", default=None, help="artifact store URI, e.g. s3://slipway (env SLIPWAY_STORE)")
    op.add_argument("--image", default=None, help="trainer/server image for the pods (env SLIPWAY_IMAGE)")
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
    op.add_argument("--log-format", choices=["plain", "json"], default="plain", help="json: one JSON object per line")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.manifests, args.store)
    if args.command == "operator":
        return run_operator(
            args.namespace,
            {
                "SLIPWAY_STORE": args.store,
                "SLIPWAY_IMAGE": args.image,
                "SLIPWAY_BACKEND": args.backend,
                "SLIPWAY_STATE": args.state,
                "SLIPWAY_METRICS_ADDRESS": args.metrics_address,
            },
            json_logs=args.log_format == "json",
        )
    return 2


def run_operator(namespaces: list[str], environment: dict[str, str | None], json_logs: bool = False) -> int:
    """The Kopf operator in this process (Ctrl-C or SIGTERM stops it). Flags reach the handlers as the
    environment they read at start-up."""
    import os

    import kopf

    os.environ.update({k: v for k, v in environment.items() if v})
    import slipway_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.PLAIN)
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces)
    return 0


if __name__ == "__main__":
    sys.exit(main())

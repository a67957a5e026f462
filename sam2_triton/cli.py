"""`sam2-triton`: download checkpoints, export graphs, lint them, build and verify engines.

Every sub-command reads model sizes and deployment profiles from configs/ and reports problems
as one line (`sam2-triton: error: ...`, exit status 2) rather than a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sam2_triton.errors import Sam2TritonError

DEFAULT_ARTIFACTS = Path("artifacts")
# The key of the server's administrative APIs (header sam2-admin-key); unset: nobody has one.
ADMIN_KEY_ENV = "SAM2_TRITON_ADMIN_KEY"


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny", help="model size (configs/models.yaml)")


def _add_download_options(parser: argparse.ArgumentParser, url_flag: str) -> None:
    from sam2_triton.export.checkpoints import DOWNLOAD_CONNECT_TIMEOUT_S

    parser.add_argument(
        url_flag,
        help="download from this address instead of the official one in configs/models.yaml "
        "(a mirror; the official SHA-256 is still required)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=DOWNLOAD_CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up a download that is not connected within this time, DNS lookup included "
        f"(default {DOWNLOAD_CONNECT_TIMEOUT_S:g})",
    )


def _export_dir(args) -> Path:
    from sam2_triton.configs import get_model

    return Path(args.output) if args.output else DEFAULT_ARTIFACTS / get_model(args.model).name


def cmd_download(args) -> int:
    from sam2_triton.configs import get_model
    from sam2_triton.export.checkpoints import download_checkpoint

    path = download_checkpoint(
        get_model(args.model),
        args.checkpoint_dir,
        url=args.url,
        force=args.force,
        connect_timeout_s=args.connect_timeout,
    )
    print(f"{path} verified")
    return 0


def cmd_export(args) -> int:
    from sam2_triton.configs import get_model
    from sam2_triton.export.checkpoints import resolve_weights
    from sam2_triton.export.onnx_export import export_model

    spec = get_model(args.model)
    weights = resolve_weights(
        spec,
        checkpoint=args.checkpoint,
        directory=args.checkpoint_dir,
        random_weights=args.random_weights,
        download_if_missing=args.download_if_missing,
        random_if_missing=args.random_weights_if_missing,
        url=args.download_url,
        connect_timeout_s=args.connect_timeout,
        seed=args.seed,
    )
    model = weights.build_model()
    # Random or unofficial weights are a warning: stderr, so that they show when stdout is not.
    print(weights.describe(), file=sys.stdout if weights.official else sys.stderr, flush=True)
    output = _export_dir(args)
    metadata = export_model(model, spec, output, checkpoint=weights.metadata())
    print(f"exported {spec.name} to {output} ({metadata.name} + 4 graphs)")
    return 0


def cmd_lint(args) -> int:
    from sam2_triton.export.contract import CONTRACTS
    from sam2_triton.export.lint import lint_file

    paths = []
    for target in args.paths or [str(DEFAULT_ARTIFACTS / "tiny")]:
        target = Path(target)
        paths += [target / c.file for c in CONTRACTS.values()] if target.is_dir() else [target]
    failed = 0
    for path in paths:
        if not path.is_file():
            raise Sam2TritonError(f"{path} not found: export the model first")
        issues = lint_file(path)
        print(f"{path}: {'ok' if not issues else f'{len(issues)} problem(s)'}")
        for issue in issues:
            print(f"  {issue}")
        failed += bool(issues)
    return 1 if failed else 0


def _engine_locations(args):
    """(deployment profile, export directory, engine directory) named by the arguments."""
    from sam2_triton.configs import get_profile

    profile = get_profile(args.profile)
    export_dir = Path(args.model_dir)
    engine_dir = Path(args.engine_dir) if args.engine_dir else export_dir / "engines" / profile.name
    return profile, export_dir, engine_dir


def cmd_build_engines(args) -> int:
    from sam2_triton.export.tensorrt.builder import build_engines

    profile, export_dir, engine_dir = _engine_locations(args)
    plans = build_engines(
        export_dir, engine_dir, profile, networks=args.networks, workspace_gib=args.workspace_gib
    )
    for plan in plans:
        print(plan)
    return 0


def cmd_verify_engines(args) -> int:
    from sam2_triton.export.tensorrt.verify import format_report, verify_engines, write_report

    profile, export_dir, engine_dir = _engine_locations(args)
    report = verify_engines(
        export_dir, engine_dir, profile, networks=args.networks, tolerance=args.tolerance
    )
    print(format_report(report))
    write_report(report, engine_dir / "verify.json")
    return 0 if all(e.ok for e in report) else 1


def cmd_build_repository(args) -> int:
    from sam2_triton.configs import get_profile
    from sam2_triton.serving.repository import build_repository

    path = build_repository(
        args.model_dir,
        args.output,
        get_profile(args.profile),
        engine_dir=args.engine_dir,
        checkpoint=args.checkpoint,
        warmup=not args.no_warmup,
    )
    print(f"{path} (profile {args.profile})")
    return 0


def cmd_router_config(args) -> int:
    from sam2_triton.serving.router import RouterSettings, Upstream, render_nginx_config

    try:
        upstreams = [Upstream.parse(text) for text in args.server]
    except ValueError as exc:
        raise Sam2TritonError(str(exc)) from None
    settings = RouterSettings(
        http_listen=args.http_listen,
        grpc_listen=args.grpc_listen,
        pid_file=args.pid_file,
        error_log=args.error_log,
        access_log=args.access_log,
        temp_dir=args.temp_dir,
        resolver=args.resolver,
    )
    _write_text(args.output, render_nginx_config(upstreams, settings))
    return 0


def cmd_kubernetes(args) -> int:
    from sam2_triton.serving.kubernetes import ClusterSettings, render_manifests

    settings = ClusterSettings(
        replicas=args.replicas,
        image=args.image,
        model=args.model,
        profile=args.profile,
        namespace=args.namespace,
        router_replicas=args.router_replicas,
    )
    _write_text(args.output, render_manifests(settings))
    return 0


def _write_text(output: str | None, text: str) -> None:
    """`text` into the file `output`, or to stdout when it is None or "-"."""
    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
        print(output)


def cmd_serve(args) -> int:
    import os
    import signal
    import time

    from sam2_triton.serving.local_server import LocalTritonServer
    from sam2_triton.serving.supervisor import ADMIN_HEADER

    server = LocalTritonServer(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_file=args.log_file,
        log_verbose=args.log_verbose,
        address=args.address,
        admin_key=os.environ.get(ADMIN_KEY_ENV) or None,
        supervise=not args.no_supervise,
    )
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    server.start(timeout_s=args.timeout)
    admin = f"with header {ADMIN_HEADER}" if os.environ.get(ADMIN_KEY_ENV) else "disabled"
    print(
        f"serving {args.repository} on {args.address}: HTTP {server.http_url}, "
        f"gRPC {server.grpc_url}, metrics {server.host}:{args.metrics_port}; "
        f"administrative APIs {admin} (log {server.log_file}); Ctrl-C stops",
        flush=True,
    )
    try:
        while not stop and server.is_running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    crashed = not server.is_running()
    tail = server.log_tail() if crashed else ""
    started = time.monotonic()
    code = server.stop()
    if crashed:
        print(f"sam2-triton: error: tritonserver exited ({code}):\n{tail}", file=sys.stderr)
        return 1
    print(f"server stopped in {time.monotonic() - started:.1f} s (exit status {code})", flush=True)
    return 0 if code == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    from sam2_triton.configs import NETWORKS
    from sam2_triton.serving.local_server import DEFAULT_ADDRESS
    from sam2_triton.serving.supervisor import ADMIN_HEADER

    parser = argparse.ArgumentParser(prog="sam2-triton", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="download an official checkpoint and verify its SHA-256")
    _add_model(p)
    p.add_argument("--checkpoint-dir", help="default: $SAM2_TRITON_CHECKPOINTS or ./checkpoints")
    p.add_argument("--force", action="store_true", help="download again even if present")
    _add_download_options(p, "--url")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("export", help="export the four ONNX graphs and metadata.json")
    _add_model(p)
    p.add_argument(
        "--checkpoint", help="checkpoint file (default: <checkpoint-dir>/<official name>)"
    )
    p.add_argument("--checkpoint-dir", help="default: $SAM2_TRITON_CHECKPOINTS or ./checkpoints")
    p.add_argument("--output", help="export directory (default: artifacts/<model>)")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="export randomly initialised weights (masks are meaningless)",
    )
    weights.add_argument(
        "--random-weights-if-missing",
        action="store_true",
        help="use the checkpoint when present, else random weights (with a warning); with "
        "--download-if-missing: random weights only when the download fails",
    )
    p.add_argument(
        "--download-if-missing",
        action="store_true",
        help="use <checkpoint-dir>/<official name> only if its SHA-256 is the official one "
        "(a file that differs is refused: delete it, or pass it with --checkpoint), and "
        "download it (checksum verified) when it is missing; a failed download is an error "
        "unless --random-weights-if-missing is given too",
    )
    _add_download_options(p, "--download-url")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("lint", help="check exported graphs against TensorRT's ONNX operator table")
    p.add_argument(
        "paths", nargs="*", help="export directories or .onnx files (default: artifacts/tiny)"
    )
    p.set_defaults(func=cmd_lint)

    for name, func, helptext in (
        ("build-engines", cmd_build_engines, "build TensorRT plans (needs TensorRT and a GPU)"),
        ("verify-engines", cmd_verify_engines, "compare TensorRT plans with ONNX Runtime"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument(
            "--model-dir", default=str(DEFAULT_ARTIFACTS / "tiny"), help="export directory"
        )
        p.add_argument(
            "--profile", default="gpu-fp16", help="deployment profile (configs/profiles.yaml)"
        )
        p.add_argument("--engine-dir", help="default: <model-dir>/engines/<profile>")
        p.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
        if name == "build-engines":
            p.add_argument("--workspace-gib", type=float, default=8.0)
        else:
            p.add_argument(
                "--tolerance", type=float, help="max relative L2 error (default per precision)"
            )
        p.set_defaults(func=func)

    p = sub.add_parser("build-repository", help="generate a ready-to-serve Triton model repository")
    p.add_argument("--model-dir", default=str(DEFAULT_ARTIFACTS / "tiny"), help="export directory")
    p.add_argument("--profile", default="cpu", help="deployment profile (configs/profiles.yaml)")
    p.add_argument("--output", default="build/model_repository", help="repository to write")
    p.add_argument("--engine-dir", help="TensorRT plans (default: <model-dir>/engines/<profile>)")
    p.add_argument("--checkpoint", help="checkpoint, for profiles that run PyTorch at serving time")
    p.add_argument("--no-warmup", action="store_true", help="leave out model_warmup (faster start)")
    p.set_defaults(func=cmd_build_repository)

    p = sub.add_parser(
        "serve", help="run the Triton server carried by nvidia-pytriton on a repository"
    )
    p.add_argument("--repository", default="build/model_repository")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help=f"IP address HTTP, gRPC and metrics listen on (default {DEFAULT_ADDRESS}: this "
        "machine only; 0.0.0.0 exposes the server: put TLS and authentication in front, see "
        "docs/deployment.md). The administrative APIs (model repository, shared memory, trace, "
        f"logging) stay disabled unless ${ADMIN_KEY_ENV} holds a key, which requests must then "
        f"send in header {ADMIN_HEADER}",
    )
    p.add_argument(
        "--no-supervise",
        action="store_true",
        help="do not reload models whose Python-backend stub died, nor unload the models "
        "before stopping (Triton's own model control and shutdown, exit timeout 20 s)",
    )
    p.add_argument("--log-file", help="server log (default: a temporary file)")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for readiness")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "router-config",
        help="nginx.conf for NGINX in front of several servers (keeps each video on one)",
    )
    p.add_argument(
        "--server",
        action="append",
        required=True,
        help="HOST[:HTTP_PORT[:GRPC_PORT]] of one Triton server (repeat for each)",
    )
    p.add_argument("--http-listen", default="8000", help="NGINX listen value for HTTP")
    p.add_argument("--grpc-listen", default="8001", help="NGINX listen value for gRPC")
    p.add_argument("--pid-file", default="/tmp/sam2-triton-router.pid")
    p.add_argument("--error-log", default="stderr")
    p.add_argument("--access-log", default="/dev/stdout")
    p.add_argument("--temp-dir", default="/tmp", help="NGINX's temporary files")
    p.add_argument(
        "--resolver",
        help="DNS server that re-resolves server names (NGINX >= 1.27.3; Kubernetes)",
    )
    p.add_argument("--output", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_router_config)

    p = sub.add_parser(
        "kubernetes",
        help="Kubernetes manifests: N Triton servers behind the NGINX router (docs/deployment.md)",
    )
    p.add_argument("--replicas", type=int, default=2, help="Triton servers (one GPU each)")
    p.add_argument("--router-replicas", type=int, default=2)
    p.add_argument("--image", default="sam2-triton:24.10", help="the GPU image (deploy/Dockerfile)")
    p.add_argument("--model", default="tiny", help="model size the servers export and serve")
    p.add_argument("--profile", default="gpu-fp16", help="deployment profile of the servers")
    p.add_argument("--namespace", default="default")
    p.add_argument("--output", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_kubernetes)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return args.func(args)
    except Sam2TritonError as exc:
        print(f"sam2-triton: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Deployment files: the Kubernetes manifests and the NGINX router in front of several servers.

The router is checked with Debian's NGINX (installed by `make system-deps`) in front of small
HTTP and gRPC backends that answer with their own name: requests of one sequence (the routing
header) always reach one backend, requests without it spread, a dead backend is skipped. The
multi-server test with real Triton servers is separate (docs/deployment.md).
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import free_port

from sam2_triton.serving.kubernetes import ClusterSettings, manifests, render_manifests
from sam2_triton.serving.router import RouterSettings, Upstream, header_variable
from sam2_triton.serving.router import render_nginx_config as render_router
from sam2_triton.wire import SEQUENCE_ROUTING_HEADER

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kubernetes" / "sam2-triton.yaml"
KUBERNETES_VERSION = "1.31"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="NGINX is not installed (make system-deps installs nginx-light)"
)


# -- Kubernetes ------------------------------------------------------------------------------


def test_checked_in_manifests_are_the_generated_ones():
    assert MANIFESTS.read_text(encoding="utf-8") == render_manifests(ClusterSettings()), (
        "deploy/kubernetes/sam2-triton.yaml is stale: run "
        "`sam2-triton kubernetes --output deploy/kubernetes/sam2-triton.yaml`"
    )


def test_manifests_validate_against_the_kubernetes_schema():
    import kubernetes_validate

    documents = [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d is not None]
    assert [d["kind"] for d in documents] == [
        "ConfigMap",
        "Service",
        "StatefulSet",
        "Deployment",
        "Service",
    ]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    broken = manifests(ClusterSettings())[2]
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelled
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_servers_get_a_gpu_shared_memory_and_readiness_on_triton():
    servers = manifests(ClusterSettings(replicas=3))[2]
    assert servers["spec"]["replicas"] == 3
    pod = servers["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_router_config_lists_every_server_pod_and_re_resolves_them():
    config = manifests(ClusterSettings(replicas=3, namespace="video"))[0]["data"]["nginx.conf"]
    for i in range(3):
        host = f"sam2-triton-server-{i}.sam2-triton-servers.video.svc.cluster.local"
        assert f"server {host}:8000 resolve" in config
        assert f"server {host}:8001 resolve" in config
    assert "resolver kube-dns.kube-system.svc.cluster.local" in config
    assert config.count("hash $route_key consistent;") == 2


# -- router config ---------------------------------------------------------------------------


def test_header_variable_is_nginx_spelling():
    assert header_variable("Sam2-Sequence-Id") == "http_sam2_sequence_id"
    assert header_variable(SEQUENCE_ROUTING_HEADER) == "http_sam2_sequence_id"


@pytest.mark.parametrize("text", ["", "host:x", "host:1:2:3", ":8000"])
def test_bad_server_spec_is_refused(text):
    with pytest.raises(ValueError, match="HOST"):
        Upstream.parse(text)


def test_server_spec_defaults_to_tritons_ports():
    assert Upstream.parse("a") == Upstream("a", 8000, 8001)
    assert Upstream.parse("a:9000") == Upstream("a", 9000, 8001)
    assert Upstream.parse("a:9000:9001") == Upstream("a", 9000, 9001)


def test_router_without_servers_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        render_router([], RouterSettings())


# -- NGINX in front of named backends -------------------------------------------------------


class _NamedHandler(http.server.BaseHTTPRequestHandler):
    name = ""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = self.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def _http_backend(name: str, port: int) -> Iterator[http.server.ThreadingHTTPServer]:
    handler = type(f"Handler_{name}", (_NamedHandler,), {"name": name})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _grpc_backend(name: str, port: int):
    import grpc

    def answer(request: bytes, context) -> bytes:
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {"Name": grpc.unary_unary_rpc_method_handler(answer)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield server
    finally:
        server.stop(0)


@contextmanager
def running_nginx(upstreams: list[Upstream], root: Path) -> Iterator[tuple[int, int]]:
    """Debian's NGINX routing to `upstreams` on loopback, its files in `root`: (HTTP port, gRPC
    port) once it answers; stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = free_port(), free_port()
    config = render_router(
        upstreams,
        RouterSettings(
            http_listen=f"127.0.0.1:{http_port}",
            grpc_listen=f"127.0.0.1:{grpc_port}",
            pid_file=str(root / "nginx.pid"),
            error_log=str(root / "error.log"),
            access_log=str(root / "access.log"),
            temp_dir=str(root),
            worker_processes="1",
        ),
    )
    (root / "nginx.conf").write_text(config)
    assert NGINX is not None
    check = subprocess.run(
        [NGINX, "-t", "-c", str(root / "nginx.conf"), "-p", str(root)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [NGINX, "-c", str(root / "nginx.conf"), "-p", str(root)], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/router/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((root / "error.log").read_text()) from None
                time.sleep(0.05)
        yield http_port, grpc_port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _post(port: int, sequence: str | None) -> str:
    headers = {SEQUENCE_ROUTING_HEADER: sequence} if sequence is not None else {}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/track_video/infer", data=b"{}", headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode()


def _grpc_call(port: int, sequence: str | None) -> str:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/test.Echo/Name")
        metadata = ((SEQUENCE_ROUTING_HEADER, sequence),) if sequence is not None else None
        return call(b"", metadata=metadata, timeout=10).decode()


@needs_nginx
def test_router_keeps_each_sequence_on_one_server_and_spreads_the_rest(tmp_path):
    ports = [(free_port(), free_port()) for _ in range(2)]
    upstreams = [Upstream("127.0.0.1", h, g) for h, g in ports]
    with (
        _http_backend("a", ports[0][0]),
        _http_backend("b", ports[1][0]),
        _grpc_backend("a", ports[0][1]),
        _grpc_backend("b", ports[1][1]),
        running_nginx(upstreams, tmp_path) as (http_port, grpc_port),
    ):
        sequences = [f"video-{i}" for i in range(24)]
        for call, port in ((_post, http_port), (_grpc_call, grpc_port)):
            routes = {s: {call(port, s) for _ in range(3)} for s in sequences}
            assert all(len(servers) == 1 for servers in routes.values()), routes
            assert {next(iter(s)) for s in routes.values()} == {"a", "b"}  # both get videos
            spread = Counter(call(port, None) for _ in range(40))
            assert set(spread) == {"a", "b"}, spread


@needs_nginx
def test_router_skips_a_server_that_refuses_connections(tmp_path):
    ports = [(free_port(), free_port()) for _ in range(2)]
    upstreams = [Upstream("127.0.0.1", h, g) for h, g in ports]
    with (
        _http_backend("a", ports[0][0]),
        running_nginx(upstreams, tmp_path) as (http_port, _),
    ):  # "b" is down: nothing listens on its port
        answers = Counter(_post(http_port, f"video-{i}") for i in range(20))
        assert answers == Counter({"a": 20})

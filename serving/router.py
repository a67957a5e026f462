"""NGINX configuration that keeps each video on one of several Triton servers.

One template (serving/nginx.conf.in) serves the local multi-server setup (loopback ports, the
Debian package's NGINX) and Kubernetes (StatefulSet pod names re-resolved through the cluster
DNS, NGINX >= 1.27.3 for `resolve` in upstreams). Why NGINX and how the routing works:
docs/deployment.md#several-servers.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sam2_triton.wire import SEQUENCE_ROUTING_HEADER

TEMPLATE = Path(__file__).with_name("nginx.conf.in")
# A server that refuses a connection is left out this long before NGINX tries it again.
FAIL_TIMEOUT_S = 5
READ_TIMEOUT_S = 600  # one CPU frame of a large model can take minutes
MAX_BODY_BYTES = 64 * 1024 * 1024  # above limits.max_image_bytes (32 MiB) and raw 1080p frames


class _Template(string.Template):
    delimiter = "@"  # NGINX's own variables start with $


def header_variable(header: str) -> str:
    """NGINX's variable for a request header: lower case, dashes as underscores, `http_`."""
    return "http_" + header.lower().replace("-", "_")


@dataclass(frozen=True)
class Upstream:
    """One Triton server: its host (name or IP) and HTTP / gRPC ports."""

    host: str
    http_port: int = 8000
    grpc_port: int = 8001

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """ "host:http_port:grpc_port" (ports optional: 8000, 8001)."""
        host, *ports = text.split(":")
        if not host or len(ports) > 2 or not all(p.isdigit() for p in ports):
            raise ValueError(f"a server is HOST[:HTTP_PORT[:GRPC_PORT]], not {text!r}")
        numbers = [int(p) for p in ports] + [8000, 8001][len(ports) :]
        return cls(host, numbers[0], numbers[1])


@dataclass(frozen=True)
class RouterSettings:
    """Where NGINX listens and writes, and how it finds the servers."""

    http_listen: str = "8000"  # NGINX `listen` values: "PORT" or "ADDRESS:PORT"
    grpc_listen: str = "8001"
    pid_file: str = "/tmp/sam2-triton-router.pid"
    error_log: str = "stderr"
    access_log: str = "/dev/stdout"
    temp_dir: str = "/tmp"
    worker_processes: str = "auto"
    foreground: bool = True  # `daemon off;` (containers, tests)
    resolver: str | None = None  # re-resolve server names through this DNS server (Kubernetes)


def _server_lines(upstreams: Sequence[Upstream], port: str, resolve: bool) -> str:
    options = f"max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s"
    if resolve:
        options = "resolve " + options
    return "\n".join(f"    server {u.host}:{getattr(u, port)} {options};" for u in upstreams)


def render_nginx_config(upstreams: Sequence[Upstream], settings: RouterSettings) -> str:
    """The nginx.conf routing to `upstreams` (at least one)."""
    if not upstreams:
        raise ValueError("the router needs at least one server")
    resolve = settings.resolver is not None
    values = {
        "routing_header": SEQUENCE_ROUTING_HEADER,
        "routing_variable": header_variable(SEQUENCE_ROUTING_HEADER),
        "worker_processes": settings.worker_processes,
        "pid_file": settings.pid_file,
        "error_log": settings.error_log,
        "access_log": settings.access_log,
        "temp_dir": settings.temp_dir,
        "daemon": "daemon off;" if settings.foreground else "",
        "resolver": f"resolver {settings.resolver} valid=5s;" if resolve else "",
        "max_body_size": str(MAX_BODY_BYTES),
        "upstream_zone_http": "zone triton_http 64k;" if resolve else "",
        "upstream_zone_grpc": "zone triton_grpc 64k;" if resolve else "",
        "http_servers": _server_lines(upstreams, "http_port", resolve),
        "grpc_servers": _server_lines(upstreams, "grpc_port", resolve),
        "http_listen": settings.http_listen,
        "grpc_listen": settings.grpc_listen,
        "read_timeout": f"{READ_TIMEOUT_S}s",
    }
    template = TEMPLATE.read_text(encoding="utf-8")
    used = {
        m.group("named") or m.group("braced")
        for m in _Template.pattern.finditer(template)
        if m.group("named") or m.group("braced")
    }
    if used != set(values):
        raise AssertionError(
            f"nginx template and values differ: unused {sorted(set(values) - used)}, "
            f"missing {sorted(used - set(values))}"
        )
    text = _Template(template).substitute(values)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip()) + "\n"

"""Kubernetes manifests: N Triton servers of this package's GPU image behind the NGINX router.

`render_manifests(settings)` returns one multi-document YAML: the router's ConfigMap
(nginx.conf from serving/router.py), a headless Service and a StatefulSet of Triton servers
(one GPU each; readiness on /v2/health/ready; /dev/shm sized for the Python backend; a volume
per server for checkpoint, export and engines), the router Deployment and the Service clients
use. `sam2-triton kubernetes` writes it; deploy/kubernetes/sam2-triton.yaml is its output for
the defaults (tests check that file is current and valid against Kubernetes' schema).
Walk-through: docs/deployment.md#kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from sam2_triton.serving.router import RouterSettings, Upstream, render_nginx_config

APP = "sam2-triton"
SERVER = f"{APP}-server"
SERVERS_SERVICE = f"{APP}-servers"  # headless: one DNS name per server pod
ROUTER = f"{APP}-router"
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
NGINX_IMAGE = "nginx:1.28-alpine"  # >= 1.27.3: `resolve` re-resolves upstream names
CLUSTER_DNS = "kube-dns.kube-system.svc.cluster.local"


@dataclass(frozen=True)
class ClusterSettings:
    """What an operator chooses; everything else follows from it."""

    replicas: int = 2
    image: str = "sam2-triton:24.10"  # deploy/Dockerfile, pushed to the cluster's registry
    model: str = "tiny"
    profile: str = "gpu-fp16"
    namespace: str = "default"
    router_replicas: int = 2  # consistent hashing gives every router replica the same routes
    shm_size: str = "2Gi"  # Python-backend shared memory (tensors between models)
    storage: str = "20Gi"  # per server: checkpoint, export, TensorRT engines
    memory: str = "32Gi"
    cpu: str = "8"

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.router_replicas < 1:
            raise ValueError("replicas and router_replicas must be at least 1")


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def _meta(name: str, settings: ClusterSettings, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": settings.namespace, "labels": _labels(component)}


def server_hosts(settings: ClusterSettings) -> list[str]:
    """DNS names of the StatefulSet's pods (stable across restarts; their IPs are not)."""
    domain = f"{SERVERS_SERVICE}.{settings.namespace}.svc.cluster.local"
    return [f"{SERVER}-{i}.{domain}" for i in range(settings.replicas)]


def router_config(settings: ClusterSettings) -> str:
    upstreams = [Upstream(host, HTTP_PORT, GRPC_PORT) for host in server_hosts(settings)]
    return render_nginx_config(
        upstreams,
        RouterSettings(
            http_listen=str(HTTP_PORT),
            grpc_listen=str(GRPC_PORT),
            pid_file="/tmp/nginx.pid",
            error_log="stderr",
            access_log="/dev/stdout",
            temp_dir="/tmp",
            resolver=CLUSTER_DNS,
        ),
    )


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
    }


def _server_set(settings: ClusterSettings) -> dict[str, Any]:
    container = {
        "name": "tritonserver",
        "image": settings.image,
        "command": ["deploy/serve_gpu.sh", settings.model, settings.profile],
        "env": [{"name": "ARTIFACTS", "value": "/var/lib/sam2-triton/artifacts"}],
        "workingDir": "/opt/sam2-triton",
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        # Export and engine building run once per server volume, then a restart is quick.
        "startupProbe": _probe("/v2/health/live", HTTP_PORT, 10, 180),
        "readinessProbe": _probe("/v2/health/ready", HTTP_PORT, 5, 2),
        "livenessProbe": _probe("/v2/health/live", HTTP_PORT, 10, 3),
        "resources": {
            "requests": {"cpu": settings.cpu, "memory": settings.memory, "nvidia.com/gpu": 1},
            "limits": {"memory": settings.memory, "nvidia.com/gpu": 1},
        },
        "volumeMounts": [
            {"name": "shm", "mountPath": "/dev/shm"},
            {
                "name": "data",
                "mountPath": "/opt/sam2-triton/checkpoints",
                "subPath": "checkpoints",
            },
            {"name": "data", "mountPath": "/var/lib/sam2-triton/artifacts", "subPath": "artifacts"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(SERVER, settings, "server"),
        "spec": {
            "serviceName": SERVERS_SERVICE,
            "replicas": settings.replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": _labels("server")},
            "template": {
                "metadata": {"labels": _labels("server")},
                "spec": {
                    # Videos on a stopping server get an error at once (the server drains);
                    # clients resume them elsewhere from a snapshot or start them anew.
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "shm",
                            "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size},
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": settings.storage}},
                    },
                }
            ],
        },
    }


def _ports(*names: str) -> list[dict[str, Any]]:
    numbers = {"http": HTTP_PORT, "grpc": GRPC_PORT, "metrics": METRICS_PORT}
    return [{"name": n, "port": numbers[n], "targetPort": numbers[n]} for n in names]


def _router(settings: ClusterSettings) -> dict[str, Any]:
    container = {
        "name": "nginx",
        "image": NGINX_IMAGE,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "grpc", "containerPort": GRPC_PORT},
        ],
        "readinessProbe": _probe("/router/health", HTTP_PORT, 5, 2),
        "livenessProbe": _probe("/router/health", HTTP_PORT, 10, 3),
        "resources": {
            "requests": {"cpu": "500m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf"}
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(ROUTER, settings, "router"),
        "spec": {
            "replicas": settings.router_replicas,
            "selector": {"matchLabels": _labels("router")},
            "template": {
                "metadata": {"labels": _labels("router")},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": ROUTER}}],
                },
            },
        },
    }


def manifests(settings: ClusterSettings) -> list[dict[str, Any]]:
    """Every object, in the order `kubectl apply` should create them."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(ROUTER, settings, "router"),
            "data": {"nginx.conf": router_config(settings)},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(SERVERS_SERVICE, settings, "server"),
            "spec": {
                "clusterIP": "None",
                "selector": _labels("server"),
                "ports": _ports("http", "grpc", "metrics"),
            },
        },
        _server_set(settings),
        _router(settings),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(APP, settings, "router"),
            "spec": {"selector": _labels("router"), "ports": _ports("http", "grpc")},
        },
    ]


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings (nginx.conf) as readable literal blocks."""


def _literal(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _literal)


def render_manifests(settings: ClusterSettings) -> str:
    """The manifests as one multi-document YAML file."""
    header = (
        "# sam2-triton on Kubernetes: generated by `sam2-triton kubernetes` "
        f"(replicas={settings.replicas}, model={settings.model}, profile={settings.profile}).\n"
        "# Walk-through: docs/deployment.md#kubernetes\n"
    )
    documents = [
        yaml.dump(m, Dumper=_LiteralDumper, sort_keys=False, width=100) for m in manifests(settings)
    ]
    return header + "---\n" + "---\n".join(documents)

"""Run the Triton Inference Server carried by `nvidia-pytriton` on a model repository.

`nvidia-pytriton` ships a complete `tritonserver` 2.51 binary with the Python backend and its
shared libraries. Started directly (not through pytriton's Python API) it serves an ordinary
model repository, which is what this module does: it lays out a backend directory, makes the
Python-backend stubs use the running interpreter's environment, starts the server on the ports
asked for, waits until it answers a readiness probe, and stops it on exit.

Closed by default: it listens on 127.0.0.1, and the administrative APIs (model repository, shared
memory, trace, logging) need a key (`admin_key`; random unless given). It reloads a model whose
Python-backend stub died (`serving/supervisor.py`), and `stop()` unloads the models first (open
video sequences dropped, requests in flight answered) so that the server exits with status 0 at
once. Design notes: docs/serving.md#reliability

On a GPU machine the production server is NVIDIA's `tritonserver` container instead
(deploy/README.md); this launcher is for machines without it (development, CI, CPU serving).

>>> with LocalTritonServer("build/model_repository", http_port=8000) as server:
...     print(server.http_url)
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from sam2_triton.errors import Sam2TritonError
from sam2_triton.serving.supervisor import (
    ADMIN_APIS,
    ADMIN_HEADER,
    AdminError,
    RepositoryAdmin,
    StubSupervisor,
    python_stubs,
    remove_shm_regions,
)

log = logging.getLogger(__name__)

# Python-backend shared memory: one request can carry several 1024x1024 float tensors (16 MiB
# of embeddings per image). Triton's default region (1 MiB, growing by 1 MiB) makes every
# large request grow it step by step.
SHM_DEFAULT_BYTES = 64 * 1024 * 1024
SHM_GROWTH_BYTES = 64 * 1024 * 1024
DEFAULT_ADDRESS = "127.0.0.1"  # loopback: reachable from this machine only
# Stopping a supervised server: its models get DRAIN_TIMEOUT_S to answer the requests in flight
# and unload; then tritonserver gets EXIT_TIMEOUT_S, which it would spend first waiting for HTTP
# clients to hang up (idle keep-alive connections too), then for models still loaded: past it,
# it exits with status 1 and kills its stubs. Drained, it has nothing left to wait for.
# Unsupervised, Triton's own shutdown does all the waiting.
DRAIN_TIMEOUT_S = 8.0
EXIT_TIMEOUT_S = 0
UNSUPERVISED_EXIT_TIMEOUT_S = 20


class ServerError(Sam2TritonError):
    """The local Triton server could not be started or did not become ready."""


def pytriton_server_dir() -> Path:
    """`pytriton/tritonserver` of the installed nvidia-pytriton wheel."""
    try:
        import pytriton
    except ImportError:
        raise ServerError(
            "nvidia-pytriton is not installed: `pip install nvidia-pytriton==0.7.0` "
            "(it carries the tritonserver binary)"
        ) from None
    server_dir = Path(pytriton.__file__).resolve().parent / "tritonserver"
    if not (server_dir / "bin" / "tritonserver").is_file():
        raise ServerError(f"{server_dir}/bin/tritonserver not found in the nvidia-pytriton wheel")
    return server_dir


def prepare_backend_dir(root: Path, server_dir: Path | None = None) -> Path:
    """Lay out `root/python/` the way tritonserver expects a backend directory.

    The wheel keeps the Python-backend stubs per Python version apart from the backend
    library; the server looks for the stub beside `libtriton_python.so`.
    """
    server_dir = server_dir or pytriton_server_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    python_dir = root / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (
        server_dir / "backends" / "python" / "libtriton_python.so",
        server_dir / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        target = python_dir / source.name
        if not target.exists():
            target.symlink_to(source)
    return root


def check_port_free(port: int, address: str = DEFAULT_ADDRESS) -> None:
    """Raise ServerError if something already listens on `address`:`port` (its readiness answer
    would be mistaken for ours)."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            raise ServerError(
                f"port {port} is already in use on {address}: choose other ports"
            ) from None


def local_host(address: str) -> str:
    """The host a client on this machine reaches a server listening on `address` at: loopback
    for the any-address, the address itself otherwise (IPv6 in brackets)."""
    ip = ipaddress.ip_address(address)
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"[{ip}]" if ip.version == 6 else str(ip)


def server_environment(server_dir: Path) -> dict:
    """Environment for tritonserver: its bundled libraries, and this interpreter's `bin/` first
    on PATH.

    The Python-backend stub embeds an isolated interpreter (PYTHONPATH is ignored) that finds
    its prefix through the `python3` on PATH; with a virtual environment's `bin/` first it
    picks up that environment's `pyvenv.cfg` and site-packages, editable installs included.
    """
    env = dict(os.environ)
    libs = server_dir.parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = os.pathsep.join(
        p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p
    )
    return env


class LocalTritonServer:
    """A `tritonserver` process serving `repository`; a context manager.

    Ports are chosen by the caller (0 is not allowed: Triton does not report what it bound).
    `start()` returns once `/v2/health/ready` answers 200, or raises `ServerError` with the
    tail of the server log.

    `address`: the interface HTTP, gRPC and metrics listen on (default loopback; "0.0.0.0"
    exposes them: put TLS and authentication in front, docs/deployment.md). `admin_key`: the
    value of header `sam2-admin-key` that the administrative APIs require (default: a random
    key only this object knows). `supervise`: reload models whose stub died, and drain the
    models at `stop()` (runs Triton with `--model-control-mode=explicit`).
    """

    def __init__(
        self,
        repository: os.PathLike,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        log_file: os.PathLike | None = None,
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        address: str = DEFAULT_ADDRESS,
        admin_key: str | None = None,
        supervise: bool = True,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args)
        try:
            self.host = local_host(address)
        except ValueError:
            raise ServerError(f"address {address!r} is not an IP address") from None
        self.address = address
        self.admin_key = admin_key or secrets.token_urlsafe(32)
        self.supervise = supervise
        self.supervisor: StubSupervisor | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="sam2-triton-server-"))
        self.log_file = Path(log_file) if log_file else self._workdir / "tritonserver.log"
        self._process: subprocess.Popen | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def admin(self) -> RepositoryAdmin:
        """The repository API of this server, with its key."""
        return RepositoryAdmin(f"http://{self.http_url}", self.admin_key)

    @property
    def pid(self) -> int | None:
        """Process id of the running tritonserver (None when it is not running)."""
        return self._process.pid if self._process is not None else None

    def access_flags(self) -> list[str]:
        """Where the server listens, and the key its administrative APIs require."""
        restricted = f"{','.join(ADMIN_APIS)}:{ADMIN_HEADER}={self.admin_key}"
        return [
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
        ]

    def lifecycle_flags(self) -> list[str]:
        """Model control (explicit, all models loaded at start, when supervised) and exit."""
        control = ["--model-control-mode=explicit", "--load-model=*"] if self.supervise else []
        exit_timeout = EXIT_TIMEOUT_S if self.supervise else UNSUPERVISED_EXIT_TIMEOUT_S
        return [
            *control,
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={exit_timeout}",
        ]

    def command(self, server_dir: Path, backend_dir: Path) -> list[str]:
        return [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            *self.access_flags(),
            f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
            f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
            f"--log-verbose={self.log_verbose}",
            *self.lifecycle_flags(),
            *self.extra_args,
        ]

    def start(self, timeout_s: float = 300.0) -> LocalTritonServer:
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist")
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            check_port_free(port, self.address)
        server_dir = pytriton_server_dir()
        backend_dir = prepare_backend_dir(self._workdir / "backends", server_dir)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(self.log_file, "ab")
        self._process = subprocess.Popen(
            self.command(server_dir, backend_dir),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=server_environment(server_dir),
            start_new_session=True,
        )
        try:
            self.wait_until_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        if self.supervise and self.pid is not None:
            self.supervisor = StubSupervisor(self.pid, self.admin).start()
        return self

    def wait_until_ready(self, timeout_s: float) -> None:
        url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is None:
                raise ServerError("tritonserver is not started")
            if self._process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with status {self._process.returncode} while "
                    f"starting:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Unload every model (`RepositoryAdmin.drain`): requests in flight are answered, open
        sequences dropped (Triton would count each as a request in flight until the exit
        timeout), new requests refused. True if all are gone within `timeout_s`."""
        from sam2_triton.configs import NETWORKS  # called through BLS by the Python models

        try:
            left = self.admin.drain(timeout_s, called=NETWORKS)
        except AdminError as exc:
            log.warning("could not unload the models before stopping: %s", exc)
            return False
        if left:
            log.warning("models still loaded %.0f s into stopping: %s", timeout_s, left)
        return not left

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """Stop supervising, drain the models (when supervised), SIGTERM tritonserver (it
        unloads what is left, which ends the stubs); SIGKILL to its whole process group after
        `timeout_s`. Stub processes and shared-memory regions that outlive it (a killed or
        timed-out server) are removed. Returns its exit status."""
        process, self._process = self._process, None
        supervisor, self.supervisor = self.supervisor, None
        returncode = None
        if supervisor is not None:
            supervisor.stop()
        if process is not None:
            regions = set(supervisor.regions_seen) if supervisor is not None else set()
            if process.poll() is None:
                regions.update(stub.shm_region for stub in python_stubs(process.pid).values())
                if supervisor is not None:
                    self.drain()
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            returncode = process.returncode
            try:  # stubs outlive a server that exited on its exit timeout or was killed
                os.killpg(process.pid, signal.SIGKILL)
                log.warning("killed the stub processes tritonserver left behind")
            except (ProcessLookupError, PermissionError):
                pass
            left = remove_shm_regions(regions)
            if left:
                log.warning("removed %d shared-memory regions tritonserver left", len(left))
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        shutil.rmtree(self._workdir / "backends", ignore_errors=True)
        return returncode

    def __enter__(self) -> LocalTritonServer:
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc) -> None:
        self.stop()

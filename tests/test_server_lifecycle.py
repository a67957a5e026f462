"""`sam2-triton serve` as an operator runs it, against a small repository (track_video and the
three networks a START frame needs), in test order:

* closed by default: every port on loopback only, the administrative APIs refused without key;
* a killed `track_video` stub: the model is reloaded (readiness says not ready meanwhile), the
  event is logged, new sequences work, and the sequence it held fails with a clear message;
* SIGTERM with an open sequence, an idle keep-alive connection and a frame half tracked: the
  frame is answered or clearly failed, the server exits 0 within 10 s, nothing is left in
  /dev/shm and no stub outlives it.

Without the command's changes each fails: ports on 0.0.0.0 and admin APIs open; the dead stub
never replaced ("Stub process ... is not healthy" forever); 20 s then exit status 1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import SERVED_VIDEO_SETTINGS, free_port
from tritonclient.utils import InferenceServerException

from sam2_triton.client import Sam2Client, Sam2ClientError
from sam2_triton.serving.supervisor import SHM_DIR, python_stubs

pytestmark = pytest.mark.served

MODELS = ("track_video", "image_encoder", "mask_decoder", "memory_encoder")
RECOVERY_BUDGET_S = 30.0
STOP_BUDGET_S = 10.0
FRAME = np.zeros((48, 64, 3), np.uint8)
FRAME[12:36, 20:44] = 200
CLICK = {1: ([[32.0, 24.0]], [1])}


@dataclass
class Served:
    cli: subprocess.Popen
    output: Path  # the command's stdout and stderr (its log)
    http_port: int
    grpc_port: int
    metrics_port: int
    triton_pid: int
    dead_regions: list[str]

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, fragment: str, timeout_s: float) -> float:
        """Seconds until `fragment` shows in the command's output."""
        started = time.monotonic()
        while fragment not in self.text():
            assert self.cli.poll() is None, f"sam2-triton serve exited:\n{self.text()}"
            assert time.monotonic() - started < timeout_s, f"no {fragment!r}:\n{self.text()}"
            time.sleep(0.1)
        return time.monotonic() - started


def http_status(url: str, method: str = "GET", headers: dict | None = None) -> int:
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def processes_where(field: int, value: int) -> list[int]:
    """Pids whose /proc/<pid>/stat field `field` (man proc's numbering: 4 the parent, 5 the
    process group) is `value`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[field - 3]) == value:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def served_cli(exported, tmp_path_factory):
    from sam2_triton.configs import get_profile
    from sam2_triton.python_backend.video.sequences import VideoSettings
    from sam2_triton.serving.repository import build_repository

    root = tmp_path_factory.mktemp("lifecycle")
    repository = build_repository(
        exported.directory,
        root / "model_repository",
        get_profile("cpu"),
        warmup=False,
        video=VideoSettings(**SERVED_VIDEO_SETTINGS),
    )
    for model in repository.iterdir():
        if model.is_dir() and model.name not in MODELS:
            shutil.rmtree(model)
    ports = [free_port() for _ in range(3)]
    output = root / "serve.out"
    env = {k: v for k, v in os.environ.items() if k != "SAM2_TRITON_ADMIN_KEY"}
    with open(output, "wb") as sink:
        cli = subprocess.Popen(
            [sys.executable, "-m", "sam2_triton.cli", "serve", "--repository", str(repository)]
            + ["--http-port", str(ports[0]), "--grpc-port", str(ports[1])]
            + ["--metrics-port", str(ports[2]), "--log-file", str(root / "tritonserver.log")],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    served = Served(cli, output, *ports, triton_pid=0, dead_regions=[])
    try:
        served.wait_for("serving ", timeout_s=600)
        [served.triton_pid] = processes_where(4, cli.pid)
        yield served
    finally:
        if cli.poll() is None:
            cli.send_signal(signal.SIGTERM)
            try:
                cli.wait(60)
            except subprocess.TimeoutExpired:
                cli.kill()
        print(f"\nsam2-triton serve output:\n{served.text()}")


# -- closed by default --------------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* has them) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.255", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_serve_listens_on_loopback_with_admin_apis_refused(served_cli):
    for port in (served_cli.http_port, served_cli.grpc_port, served_cli.metrics_port):
        addresses = listening_addresses(port)
        assert addresses and addresses <= LOOPBACK, (port, addresses)
    address = outward_address()
    if address is not None:
        with pytest.raises(ConnectionRefusedError), socket.socket() as outside:
            outside.settimeout(5)
            outside.connect((address, served_cli.http_port))

    base = f"http://{served_cli.url}"
    for method, path in (
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/track_video/unload"),
        ("GET", "/v2/logging"),
        ("GET", "/v2/trace/setting"),
        ("GET", "/v2/systemsharedmemory/status"),
    ):
        assert http_status(base + path, method) == 403, path
        assert http_status(base + path, method, {"sam2-admin-key": "guess"}) == 403, path
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{served_cli.grpc_port}")
    for call in (lambda: grpc.unload_model("track_video"), grpc.get_log_settings):
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
    # inference, health and metadata stay open; the refused unload did nothing
    assert http_status(base + "/v2/health/ready") == 200
    assert http_status(base + "/v2/models/track_video/ready") == 200
    assert http_status(base + "/v2/models/track_video/config") == 200
    assert "administrative APIs disabled" in served_cli.text()


# -- a crashed stub ----------------------------------------------------------------------------


def test_a_killed_stub_is_reloaded_and_its_sequence_reported_lost(served_cli):
    client = Sam2Client(served_cli.url)
    held = client.video_session()
    assert held.track(FRAME, points=CLICK).frame_index == 0

    [stub] = [s for s in python_stubs(served_cli.triton_pid).values() if s.model == "track_video"]
    served_cli.dead_regions.append(stub.shm_region)
    os.kill(stub.pid, signal.SIGKILL)
    killed = time.monotonic()
    # readiness tells the truth while the model is reloaded (no request reaches the dead stub)
    ready = f"http://{served_cli.url}/v2/health/ready"
    not_ready_seen = False
    while "model 'track_video' reloaded" not in served_cli.text():
        not_ready_seen |= http_status(ready) != 200
        assert time.monotonic() - killed < RECOVERY_BUDGET_S, served_cli.text()
        time.sleep(0.05)
    assert not_ready_seen
    assert http_status(ready) == 200
    with client.video_session() as fresh:
        assert fresh.track(FRAME, points=CLICK).frame_index == 0
    recovered_s = time.monotonic() - killed
    print(f"\nkilled track_video stub: serving new sequences again after {recovered_s:.1f} s")
    assert recovered_s < RECOVERY_BUDGET_S

    with pytest.raises(Sam2ClientError) as lost:
        held.track(FRAME)
    message = str(lost.value)
    assert "must specify the START flag" in message
    assert "lost when the server reloaded a crashed model" in message and "\n" not in message
    text = served_cli.text()
    assert f"stub of model 'track_video' died (instance track_video_0_0, pid {stub.pid})" in text
    assert "the sequences it held are lost" in text
    new = [s for s in python_stubs(served_cli.triton_pid).values() if s.model == "track_video"]
    assert len(new) == 1 and new[0].pid != stub.pid
    deadline = time.monotonic() + 10
    while (SHM_DIR / stub.shm_region).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (SHM_DIR / stub.shm_region).exists()  # the dead instance was freed


# -- stopping -----------------------------------------------------------------------------------


def test_sigterm_with_open_sequences_exits_cleanly_and_at_once(served_cli):
    open_session = Sam2Client(served_cli.url).video_session()  # left open, connection kept
    started = time.monotonic()
    assert open_session.track(FRAME, points=CLICK).frame_index == 0
    frame_s = time.monotonic() - started
    regions = {s.shm_region for s in python_stubs(served_cli.triton_pid).values()}
    regions.update(served_cli.dead_regions)
    assert len(regions) >= len(MODELS)

    outcome: list[object] = []

    def frame_in_flight():
        try:
            session = Sam2Client(served_cli.url).video_session()
            outcome.append(session.track(FRAME, points=CLICK))
        except Sam2ClientError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=frame_in_flight)
    worker.start()
    time.sleep(frame_s / 2)  # the frame is half tracked
    assert worker.is_alive()
    served_cli.cli.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = served_cli.cli.wait(60)
    stopped_s = time.monotonic() - started
    worker.join(60)
    print(f"\nSIGTERM with a {frame_s:.1f} s frame half done: exit status {code} after ", end="")
    print(f"{stopped_s:.1f} s; the frame: {type(outcome[0]).__name__ if outcome else None}")
    assert not worker.is_alive() and len(outcome) == 1
    if isinstance(outcome[0], Sam2ClientError):  # clearly failed: says why
        assert str(outcome[0]).strip()
    else:
        assert outcome[0].frame_index == 0  # delivered
    assert code == 0, served_cli.text()
    assert "(exit status 0)" in served_cli.text()
    assert stopped_s <= STOP_BUDGET_S
    assert not [r for r in regions if (SHM_DIR / r).exists()]
    assert processes_where(5, served_cli.triton_pid) == []  # no stub outlives the server

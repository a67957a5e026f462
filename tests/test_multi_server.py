"""Two real Triton servers behind the NGINX router (serving/router.py), all on loopback.

Videos stay on one server: every request after START reaches the server that holds the
sequence, or that server's Triton would refuse it (a sequence must start with START), so eight
videos finishing without an error, with each server's own frame counter (sam2_video_frames_total
on its metrics port) adding up to every frame and both servers busy, is the proof. Results equal
those of one server alone. Then a server is killed mid-video: its videos fail with a clear
error within seconds, the other server's finish, and the restarted server takes new videos.

Slow (two servers on CPU, each frame seconds: about five minutes): marked `served` like every test
with a server, and `multi_server`, which the default run leaves out: `make test-multi-server`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import SERVED_VIDEO_SETTINGS, running_server
from test_deploy import needs_nginx, running_nginx
from tritonclient.utils import InferenceServerException

from sam2_triton.client import FramePrompts, Sam2Client, Sam2ClientError
from sam2_triton.serving.router import Upstream
from sam2_triton.wire import SEQUENCE_ROUTING_HEADER

WIDTH, HEIGHT = 96, 72
NUM_FRAMES = 3
VIDEOS_PER_PROTOCOL = 4


def _frames(seed: int) -> list[np.ndarray]:
    """NUM_FRAMES frames: a disc moving over a background that differs per video."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack(
        [50 + 20 * np.sin(xx / (6.0 + seed)), 60 + 20 * np.cos(yy / 7.0), np.full(xx.shape, 80.0)],
        axis=-1,
    )
    frames = []
    for t in range(NUM_FRAMES):
        frame = base.copy()
        frame[(xx - 30 - 5 * t) ** 2 + (yy - 36) ** 2 <= 12**2] = (220, 70, 40)
        frames.append(frame.astype(np.uint8))
    return frames


BOX = {1: (16, 22, 44, 50)}


def _track(url: str, protocol: str, seed: int, sequence_id: int) -> list[np.ndarray]:
    """The masks of one video tracked through `url` (the client sends the routing header)."""
    client = Sam2Client(url, protocol=protocol)
    with client.video_session(num_frames=NUM_FRAMES, sequence_id=sequence_id) as video:
        results = list(video.track_frames(_frames(seed), {0: FramePrompts(boxes=BOX)}))
    return [r.masks for r in results]


def _frames_tracked(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    found = re.findall(
        rb'^sam2_video_frames_total\{[^}]*model="track_video"[^}]*\} ([0-9.e+]+)$', text, re.M
    )
    return sum(float(v) for v in found)


@pytest.fixture(scope="module")
def repository(exported, tmp_path_factory) -> Path:
    from sam2_triton.configs import get_profile
    from sam2_triton.python_backend.video.sequences import VideoSettings
    from sam2_triton.serving.repository import build_repository

    root = tmp_path_factory.mktemp("multi_server")
    return build_repository(
        exported.directory,
        root / "model_repository",
        get_profile("cpu"),
        warmup=False,
        video=VideoSettings(**SERVED_VIDEO_SETTINGS),
    )


@contextmanager
def _router(servers, root: Path) -> Iterator[tuple[str, str]]:
    """NGINX in front of `servers`: its HTTP and gRPC URLs."""
    upstreams = [Upstream("127.0.0.1", s.http_port, s.grpc_port) for s in servers]
    with running_nginx(upstreams, root) as (http_port, grpc_port):
        yield f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"


def _requests_served(metrics_port: int) -> float:
    """Triton's own count of track_video requests on one server (answered or refused)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    found = re.findall(
        rb'^nv_inference_request_(?:success|failure)\{[^}]*model="track_video"[^}]*\} '
        rb"([0-9.e+]+)$",
        text,
        re.M,
    )
    return sum(float(v) for v in found)


def _probe(url: str, protocol: str, sequence_id: int, servers) -> int:
    """Which server the router sends `sequence_id` to: one START + END request without a frame
    (an empty answer), seen in the servers' own request counters."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    before = [_requests_served(s.metrics_port) for s in servers]
    module = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(url)
    try:
        client.infer(
            "track_video",
            [],
            sequence_id=sequence_id,
            sequence_start=True,
            sequence_end=True,
            headers={SEQUENCE_ROUTING_HEADER: str(sequence_id)},
        )
    except InferenceServerException:
        pass  # an empty START may be refused; it was counted where it arrived
    finally:
        client.close()
    grown = [i for i, s in enumerate(servers) if _requests_served(s.metrics_port) > before[i]]
    assert len(grown) == 1, grown
    return grown[0]


def _ids_per_server(url: str, protocol: str, servers, first_id: int, per_server: int):
    """`per_server` sequence ids the router sends to each server, by probing."""
    chosen: dict[int, list[int]] = {i: [] for i in range(len(servers))}
    sequence_id = first_id
    while any(len(ids) < per_server for ids in chosen.values()):
        assert sequence_id < first_id + 200, chosen
        server = _probe(url, protocol, sequence_id, servers)
        if len(chosen[server]) < per_server:
            chosen[server].append(sequence_id)
        sequence_id += 1
    return chosen


@needs_nginx
@pytest.mark.served
@pytest.mark.multi_server
def test_videos_stay_on_one_server_and_survive_the_loss_of_another(repository, tmp_path):
    with ExitStack() as stack:
        servers = [
            stack.enter_context(running_server(repository, tmp_path / f"server{i}"))
            for i in range(2)
        ]
        http_url, grpc_url = stack.enter_context(_router(servers, tmp_path / "router"))
        urls = {"http": http_url, "grpc": grpc_url}
        plan = []  # (protocol, sequence id, server the router sends it to)
        for protocol, first in (("http", 1000), ("grpc", 2000)):
            for server, ids in _ids_per_server(urls[protocol], protocol, servers, first, 2).items():
                plan += [(protocol, sequence_id, server) for sequence_id in ids]

        with ThreadPoolExecutor(len(plan)) as pool:
            routed = list(pool.map(lambda job: _track(urls[job[0]], job[0], job[1], job[1]), plan))
        expected = [NUM_FRAMES * sum(1 for job in plan if job[2] == i) for i in range(2)]
        assert [_frames_tracked(s.metrics_port) for s in servers] == expected
        # one server alone gives the same masks (one video of each protocol)
        for index in (0, len(plan) - 1):
            protocol, sequence_id, _ = plan[index]
            alone = _track(servers[0].grpc_url, "grpc", sequence_id, sequence_id + 50000)
            for got, want in zip(routed[index], alone):
                np.testing.assert_array_equal(got, want)

        # server 1 dies mid-video: its videos fail at once, server 0's go on
        victims = _ids_per_server(grpc_url, "grpc", servers, 3000, 2)
        client = Sam2Client(grpc_url, protocol="grpc")
        sessions = {
            server: [client.video_session(num_frames=NUM_FRAMES, sequence_id=i) for i in ids]
            for server, ids in victims.items()
        }
        frames = _frames(0)
        for session in sessions[0] + sessions[1]:
            session.track(frames[0], boxes=BOX)
        os.kill(servers[1].pid, signal.SIGKILL)
        servers[1].stop()
        for session in sessions[1]:
            started = time.monotonic()
            with pytest.raises(Sam2ClientError, match="START|sequence"):
                session.track(frames[1])
            assert time.monotonic() - started < 30
        for session in sessions[0]:
            assert session.track(frames[1]).masks.any()
            session.end()
        for session in sessions[1]:
            with contextlib.suppress(Sam2ClientError):
                session.end()

        # back on its ports, server 1 takes new videos
        servers[1].start(timeout_s=600)
        comeback = _ids_per_server(grpc_url, "grpc", servers, 4000, 1)[1][0]
        _track(grpc_url, "grpc", 0, comeback)
        assert _frames_tracked(servers[1].metrics_port) == NUM_FRAMES

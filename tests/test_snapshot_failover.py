"""Client failover with sequence snapshots: the library's snapshots every K frames and its move to
a fallback server (against stand-in servers), then through real Triton servers: a snapshot taken
on one sequence resumes on another with the same masks on every later frame (SAM 2 and SAMURAI),
and a killed server's video resumes on a second server, masks equal to the uninterrupted run's.

The killed-server test starts a second server (the first is the session's `served` one) and
tracks about fifteen frames: 114 s on a 2-core CPU, so it stays in the served run.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from conftest import running_server
from test_video_client import frame_outputs

from sam2_triton import wire
from sam2_triton.client import Sam2Client, Sam2ClientError
from sam2_triton.client import video as client_video

# -- the library against stand-in servers ---------------------------------------------------------


class FakeServer:
    """A server's sequences: each the list of frames it tracked (the "memory"); a snapshot is
    that list as JSON. `alive` False: every request fails as an unreachable server's does."""

    def __init__(self) -> None:
        self.sequences: dict[int, list[int]] = {}
        self.alive = True
        self.requests: list[dict] = []  # what reached it: tensors + start


class FakeTransport:
    """Stands in for SequenceTransport on one FakeServer (looked up by URL)."""

    servers: dict[str, FakeServer] = {}

    def __init__(self, url, protocol, model, sequence_id, timeout_s=1.0):
        self.url, self.protocol, self.model = url, protocol, model
        self.sequence_id, self.timeout_s = sequence_id, timeout_s
        self.answers: dict[int, tuple[dict, bool]] = {}

    def submit(self, tensors, outputs, start=False, end=False):
        ticket = len(self.answers)
        self.answers[ticket] = (dict(tensors), start)
        return ticket

    def result(self, ticket, outputs):
        tensors, start = self.answers.pop(ticket)
        server = self.servers[self.url]
        if not server.alive:
            raise Sam2ClientError(f"server at {self.url} is not reachable over grpc (refused)")
        server.requests.append({**tensors, "start": start})
        if start:
            restore = tensors.get(wire.RESTORE_SNAPSHOT)
            state = [] if restore is None else json.loads(restore.tobytes())
            server.sequences[self.sequence_id] = state
        elif self.sequence_id not in server.sequences:
            raise Sam2ClientError("inference request for sequence 7 must specify the START flag")
        state = server.sequences[self.sequence_id]
        snapshot = json.dumps(state).encode() if wire.TAKE_SNAPSHOT in tensors else b""
        frame = -1
        if wire.IMAGE_RAW in tensors:
            frame = state[-1] + 1 if state else 0
            state.append(frame)
        elif wire.POINT_OBJ_IDS in tensors:
            frame = state[-1]
        outputs = frame_outputs(frame, obj_ids=() if frame < 0 else (1,))
        outputs[wire.STATE_BYTES] = np.array([sum(state) * 100 + len(state)], np.int64)
        outputs[wire.SNAPSHOT] = np.frombuffer(snapshot, np.uint8)
        return outputs

    def close(self):
        pass


@pytest.fixture
def fake_servers(monkeypatch):
    monkeypatch.setattr(client_video, "SequenceTransport", FakeTransport)
    FakeTransport.servers = {"a:1": FakeServer(), "b:1": FakeServer(), "c:1": FakeServer()}
    return FakeTransport.servers


def raw_frame(t: int) -> np.ndarray:
    return np.full((4, 6, 3), t, np.uint8)


def test_the_session_snapshots_every_k_frames_and_resumes_on_a_fallback(fake_servers):
    transport = FakeTransport("a:1", "grpc", "track_video", 7)
    session = client_video.VideoSession(transport, snapshot_every=3, fallback_urls=["b:1", "c:1"])
    for t in range(7):
        result = session.track(raw_frame(t))
        if t == 1:
            session.correct(points={1: ([[1, 1]], [1])})
    first = fake_servers["a:1"]
    taken = [i for i, r in enumerate(first.requests) if wire.TAKE_SNAPSHOT in r]
    assert taken == [4, 7]  # with frames 3 and 6 (request 2 is the correction of frame 1)
    assert json.loads(session.last_snapshot) == [0, 1, 2, 3, 4, 5]  # the state before frame 6
    first.alive = False
    fake_servers["b:1"].alive = False  # the first fallback is down too: the next one takes it
    result = session.track(raw_frame(7))
    assert session.failovers == 2 and session.fallback_urls == []
    third = fake_servers["c:1"]
    assert third.requests[0]["start"] and wire.RESTORE_SNAPSHOT in third.requests[0]
    assert [r["start"] for r in third.requests] == [True, False]  # frame 6 re-sent, then 7
    assert third.sequences[7] == list(range(8)) and result.frame_index == 7
    assert result.state_bytes == sum(range(8)) * 100 + 8  # as if nothing happened
    third.alive = False
    with pytest.raises(Sam2ClientError, match="not reachable"):
        session.track(raw_frame(8))  # no fallback left


def test_failover_before_the_first_snapshot_starts_over(fake_servers):
    transport = FakeTransport("a:1", "grpc", "track_video", 7)
    session = client_video.VideoSession(
        transport, samurai=True, snapshot_every=5, fallback_urls=["b:1"]
    )
    for t in range(3):
        session.track(raw_frame(t), boxes={1: [0, 0, 2, 2]} if t == 0 else None)
    fake_servers["a:1"].alive = False
    session.track(raw_frame(3))
    second = fake_servers["b:1"].requests
    assert second[0]["start"] and wire.RESTORE_SNAPSHOT not in second[0]
    assert bool(second[0][wire.SAMURAI][0]) and wire.BOX_PROMPTS in second[0]  # as first sent
    assert fake_servers["b:1"].sequences[7] == [0, 1, 2, 3]


def test_server_lost_tells_a_lost_server_from_a_refused_request():
    lost = client_video.server_lost
    assert lost(Sam2ClientError("server at x is not reachable over http (refused)"))
    assert lost(Sam2ClientError("stream broke", status="StatusCode.UNAVAILABLE"))
    assert lost(Sam2ClientError("... must specify the START flag", status="400"))
    assert not lost(Sam2ClientError("track_video: too many objects", status="400"))
    with pytest.raises(ValueError, match="fallback_urls need snapshot_every"):
        client_video.VideoSession(FakeTransport("a:1", "grpc", "m", 7), fallback_urls=["b:1"])


class FailoverClient:
    """Stands in for Sam2Client in the `track` command: sessions over FakeTransports."""

    def __init__(self, url, protocol, model_prefix, timeout_s):
        self.url, self.protocol = url, protocol

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def video_session(self, **options):
        transport = FakeTransport(self.url, self.protocol, "track_video", 7)
        session = client_video.VideoSession(transport, **options)
        SESSIONS.append(session)
        return session


SESSIONS: list = []


def test_track_command_fails_over_with_its_flags(fake_servers, monkeypatch, tmp_path, capsys):
    from PIL import Image
    from test_video_client import H, W

    from sam2_triton.client.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(5):
        Image.fromarray(np.full((H, W, 3), 40 * t, np.uint8)).save(folder / f"{t}.png")
    monkeypatch.setattr("sam2_triton.client.cli.Sam2Client", FailoverClient)
    first = fake_servers["a:1"]
    real_result = FakeTransport.result

    def dies_after_three(self, ticket, outputs):  # server a:1 answers three requests
        first.alive = len(first.requests) < 3
        return real_result(self, ticket, outputs)

    monkeypatch.setattr(FakeTransport, "result", dies_after_three)
    SESSIONS.clear()
    args = ["track", str(folder), "--box", "0:1:1,1,9,9", "--url", "a:1", "--protocol", "grpc"]
    flags = ["--snapshot-every", "2", "--fallback-url", "b:1", "--output", str(tmp_path / "o")]
    assert main(args + flags) == 0
    assert "5 frame(s) tracked" in capsys.readouterr().out
    (session,) = SESSIONS
    assert session.snapshot_every == 2 and session.failovers == 1
    assert fake_servers["b:1"].sequences[7] == [0, 1, 2, 3, 4]
    assert main(args + ["--fallback-url", "b:1", "--output", str(tmp_path / "p")]) == 2
    assert "--fallback-url needs --snapshot-every" in capsys.readouterr().err


# -- real servers ---------------------------------------------------------------------------------

NUM_FRAMES = 4
WIDTH, HEIGHT = 96, 72
BOX = {1: (16, 22, 44, 50)}
CLICK = {1: ([[30, 36]], [1])}


def frames(count: int) -> list[np.ndarray]:
    """A disc moving right over a textured background."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack(
        [50 + 20 * np.sin(xx / 6.0), 60 + 20 * np.cos(yy / 7.0), np.full(xx.shape, 80.0)], axis=-1
    )
    out = []
    for t in range(count):
        frame = base.copy()
        frame[(xx - 30 - 5 * t) ** 2 + (yy - 36) ** 2 <= 12**2] = (220, 70, 40)
        out.append(frame.astype(np.uint8))
    return out


@pytest.mark.parametrize("samurai", [False, True], ids=["sam2", "samurai"])
def test_a_snapshot_resumes_on_another_sequence_with_the_same_masks(served, samurai):
    video_frames = frames(NUM_FRAMES)
    client = Sam2Client(served.http_url)
    options = {"samurai": True, "samurai_settings": {"stable_frames_threshold": 1}}
    with client.video_session(answer="rle", **(options if samurai else {})) as video:
        video.track(video_frames[0], boxes=BOX)
        video.track(video_frames[1])
        video.correct(points=CLICK)
        snapshot = video.snapshot()
        expected = [video.track(frame) for frame in video_frames[2:]]
    header, _ = wire.snapshot_header(snapshot)
    assert header["model"]["name"] == served.exported.spec.name
    assert header["memory_storage"] == "bfloat16" and header["state"]["last_frame"] == 1
    with Sam2Client(served.grpc_url, protocol="grpc").video_session(restore_from=snapshot) as video:
        assert video.answer == "rle" and video.samurai == samurai
        got = [video.track(frame) for frame in video_frames[2:]]
    for a, b in zip(got, expected):
        assert a.frame_index == b.frame_index and a.obj_ids.tolist() == [1]
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert a.masks.any()


def test_a_snapshot_of_another_model_is_refused_by_the_server(served):
    from sam2_triton.python_backend.video import snapshots

    with Sam2Client(served.http_url).video_session() as video:
        video.track(frames(1)[0], boxes=BOX)
        snapshot = video.snapshot()
    header, end = wire.snapshot_header(snapshot)
    header["model"]["name"] = "large"
    del header["sha256"]
    forged = snapshots._pack(header, snapshot[end:])  # a valid snapshot of another size
    with Sam2Client(served.http_url).video_session(restore_from=forged) as video:
        with pytest.raises(Sam2ClientError, match="another model: its name is 'large'"):
            video.track(frames(2)[1])


KILLED_FRAMES = 6


def test_a_killed_servers_video_resumes_on_another_server(served, tmp_path):
    """Server 1, holding a SAM 2 and a SAMURAI video, is killed between frames 3 and 4; each
    client (snapshots every 2 frames) resumes on the session's server from the snapshot before
    frame 2, re-sends frames 2 and 3, and frames 4 and 5 equal those of the uninterrupted run."""
    video_frames = frames(KILLED_FRAMES)
    modes = [{}, {"samurai": True, "samurai_settings": {"stable_frames_threshold": 1}}]

    def run(videos, kill=None) -> list[list]:
        """The same frames and prompts in every video, frame by frame."""
        results = []
        for video in videos:
            first = video.track(video_frames[0], boxes=BOX)
            video.track(video_frames[1])
            results.append([first, video.correct(points=CLICK)])
        for t in range(2, KILLED_FRAMES):
            if t == 4 and kill is not None:
                kill()
            for video, got in zip(videos, results):
                got.append(video.track(video_frames[t]))
        return results

    client = Sam2Client(served.grpc_url, protocol="grpc")
    expected = []
    for options in modes:
        with client.video_session(**options) as video:
            expected += run([video])
    with running_server(served.repository, tmp_path / "victim") as victim:

        def kill() -> None:
            os.kill(victim.pid, signal.SIGKILL)
            victim.stop()

        client = Sam2Client(victim.grpc_url, protocol="grpc")
        sessions = [
            client.video_session(snapshot_every=2, fallback_urls=[served.grpc_url], **options)
            for options in modes
        ]
        with sessions[0] as sam2_video, sessions[1] as samurai_video:
            got = run([sam2_video, samurai_video], kill)
            assert sam2_video.failovers == 1 and samurai_video.failovers == 1
            assert samurai_video.samurai and not sam2_video.samurai
    for mode_got, mode_expected in zip(got, expected):
        assert len(mode_got) == len(mode_expected) == KILLED_FRAMES
        for a, b in zip(mode_got, mode_expected):
            assert a.frame_index == b.frame_index
            np.testing.assert_array_equal(a.masks, b.masks)
            np.testing.assert_array_equal(a.object_score_logits, b.object_score_logits)

"""Sequence snapshots (python_backend/video/snapshots.py): a tracker restored from a snapshot
goes on exactly as the one snapshotted, and snapshots of another model, size, version,
precision or memory storage, corrupted or too large ones are refused with clear errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from test_video_tracking import (
    BOX,
    CLICK,
    FAKE_METADATA,
    FakeNetworks,
    _bounded_script,
    fake_frame,
    synthetic_frames,
)

from sam2_triton.python_backend.errors import InputError, SnapshotError
from sam2_triton.python_backend.samurai import SamuraiSettings
from sam2_triton.python_backend.video.snapshots import (
    FORMAT_VERSION,
    MAGIC,
    model_identity,
    read_snapshot,
    snapshot_header,
)
from sam2_triton.python_backend.video.tracker import VideoTracker

FAKE_MODEL_METADATA = {
    **FAKE_METADATA,
    "model": {
        "name": "tiny",
        "family": "sam2.1",
        "config": "configs/sam2.1/sam2.1_hiera_t.yaml",
        "checkpoint": {"sha256": "ab" * 32},
    },
}
# SAMURAI with a short settling time, so that the motion score (and the Kalman state it
# needs) decides within a short test video.
QUICK_SAMURAI = {"stable_frames_threshold": 2, "stable_ious_threshold": 0.0}


def samurai_settings(samurai: bool) -> SamuraiSettings | None:
    return SamuraiSettings.load().with_overrides(QUICK_SAMURAI) if samurai else None


def fake_pair(samurai: bool, **settings) -> tuple[VideoTracker, FakeNetworks]:
    networks = FakeNetworks(_bounded_script)
    tracker = VideoTracker(
        networks, FAKE_MODEL_METADATA, samurai=samurai_settings(samurai), **settings
    )
    return tracker, networks


def fake_click(obj_id: int) -> tuple[list, list]:
    """A click that FakeNetworks reads as object `obj_id` (see FakeNetworks)."""
    return [[float(obj_id), 2.0]], [1]


def assert_same_result(got, expected) -> None:
    assert got.frame_idx == expected.frame_idx and got.obj_ids == expected.obj_ids
    np.testing.assert_array_equal(got.host_low_res_logits, expected.host_low_res_logits)
    np.testing.assert_array_equal(got.masks, expected.masks)
    np.testing.assert_array_equal(got.scores, expected.scores)
    np.testing.assert_array_equal(got.object_score_logits, expected.object_score_logits)
    np.testing.assert_array_equal(got.present, expected.present)


def snapshot_of(tracker: VideoTracker, metadata=FAKE_MODEL_METADATA, **kwargs) -> bytes:
    return tracker.snapshot(model_identity(metadata), **kwargs)


# -- fake networks: the whole state, every later frame ----------------------------------------


@pytest.mark.parametrize("samurai", [False, True], ids=["sam2", "samurai"])
def test_restored_tracker_goes_on_exactly_fake_networks(samurai):
    tracker, _ = fake_pair(samurai)
    tracker.add_prompt(0, 1, points=fake_click(1)[0], labels=fake_click(1)[1])
    for t in range(4):
        tracker.track(t, fake_frame(t))
    tracker.add_prompt(3, 2, points=fake_click(2)[0], labels=fake_click(2)[1])
    tracker.correct(3)  # a new object on the last frame, then a pending prompt for frame 4
    tracker.add_prompt(4, 1, points=[[1.0, 2.0], [5.0, 6.0]], labels=[1, 0])
    data = snapshot_of(tracker)
    nbytes = tracker.nbytes
    restored = VideoTracker.from_snapshot(data, FakeNetworks(_bounded_script), FAKE_MODEL_METADATA)
    assert restored.nbytes <= nbytes  # the last frame's features are left out
    assert restored.counts == tracker.counts and restored.pending_frame == 4
    for t in range(4, 12):
        assert_same_result(restored.track(t, fake_frame(t)), tracker.track(t, fake_frame(t)))
    assert restored.counts == tracker.counts
    if samurai:
        for obj_id in tracker.objects:
            a, b = tracker.objects[obj_id].motion, restored.objects[obj_id].motion
            np.testing.assert_array_equal(a.mean, b.mean)
            np.testing.assert_array_equal(a.covariance, b.covariance)
            assert a.stable_count == b.stable_count and a.records == b.records


def test_snapshot_keeps_the_stored_dtype_and_leaves_the_tracker_alone():
    tracker, _ = fake_pair(False)
    tracker.add_prompt(0, 1, points=fake_click(1)[0], labels=fake_click(1)[1])
    for t in range(3):
        tracker.track(t, fake_frame(t))
    before = (tracker.nbytes, tracker.transfers.count)
    data = snapshot_of(tracker, sequence={"answer": "rle"})
    assert tracker.nbytes == before[0]
    assert tracker.transfers.count == before[1] + 1  # every device tensor in one transfer
    header = snapshot_header(data)
    assert header["format_version"] == FORMAT_VERSION and header["memory_storage"] == "bfloat16"
    assert header["model"]["name"] == "tiny" and header["sequence"] == {"answer": "rle"}
    assert header["dtypes"]["objects/1/memories"] == "bfloat16"
    snapshot = read_snapshot(data, model_identity(FAKE_MODEL_METADATA), "bfloat16")
    memories = snapshot.arrays["objects/1/memories"]
    assert isinstance(memories, torch.Tensor) and memories.dtype == torch.bfloat16
    bank = tracker.objects[1].bank
    assert torch.equal(memories, torch.stack(list(bank.non_cond_memories.values())))


def test_a_snapshot_of_a_fresh_or_objectless_sequence_restores():
    tracker, networks = fake_pair(False)
    fresh = VideoTracker.from_snapshot(snapshot_of(tracker), networks, FAKE_MODEL_METADATA)
    assert fresh.last_frame == -1 and fresh.obj_ids == []
    tracker.track(0, fake_frame(0))  # no object: the tracker keeps the image, so does the snapshot
    restored = VideoTracker.from_snapshot(snapshot_of(tracker), networks, FAKE_MODEL_METADATA)
    for t in (tracker, restored):
        t.add_prompt(0, 1, points=fake_click(1)[0], labels=fake_click(1)[1])
    assert_same_result(restored.correct(0), tracker.correct(0))


def test_the_snapshot_frame_cannot_be_corrected_after_a_restore():
    tracker, networks = fake_pair(False)
    tracker.add_prompt(0, 1, points=fake_click(1)[0], labels=fake_click(1)[1])
    tracker.track(0, fake_frame(0))
    restored = VideoTracker.from_snapshot(snapshot_of(tracker), networks, FAKE_MODEL_METADATA)
    restored.add_prompt(0, 1, points=fake_click(1)[0], labels=fake_click(1)[1])
    with pytest.raises(InputError, match="restored from a snapshot"):
        restored.correct(0)


# -- refusals ----------------------------------------------------------------------------------


def _snapshot_with_header(data: bytes, **changes) -> bytes:
    """`data` with header fields changed (the checksum left as it was)."""
    length = struct.unpack_from("<I", data, len(MAGIC))[0]
    start = len(MAGIC) + 4
    header = json.loads(data[start : start + length])
    header.update(changes)
    text = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(text)) + text + data[start + length :]


@pytest.fixture(scope="module")
def snapshot_bytes() -> bytes:
    tracker, _ = fake_pair(True)
    tracker.add_prompt(0, 1, points=fake_click(1)[0], labels=fake_click(1)[1])
    for t in range(3):
        tracker.track(t, fake_frame(t))
    return snapshot_of(tracker)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "large"}, "another model: its name is 'tiny', this server's is 'large'"),
        ({"family": "sam2"}, "another model: its family"),
        ({"checkpoint": {"sha256": "cd" * 32}}, "its checkpoint_sha256"),
    ],
)
def test_snapshots_of_another_model_are_refused(snapshot_bytes, change, message):
    model = model_identity(FAKE_MODEL_METADATA)
    metadata = {**FAKE_MODEL_METADATA, "model": {**FAKE_MODEL_METADATA["model"], **change}}
    with pytest.raises(SnapshotError, match=message):
        VideoTracker.from_snapshot(snapshot_bytes, FakeNetworks(), metadata)
    with pytest.raises(SnapshotError, match="its precision is 'fp32', this server's is 'fp16'"):
        read_snapshot(snapshot_bytes, {**model, "precision": "fp16"}, "bfloat16")


def test_other_versions_storages_corrupted_and_foreign_data_are_refused(snapshot_bytes):
    model = model_identity(FAKE_MODEL_METADATA)
    newer = _snapshot_with_header(snapshot_bytes, format_version=FORMAT_VERSION + 1)
    with pytest.raises(SnapshotError, match=f"format version {FORMAT_VERSION + 1}"):
        read_snapshot(newer, model, "bfloat16")
    with pytest.raises(SnapshotError, match="stores memories as 'bfloat16'.*'float32'"):
        read_snapshot(snapshot_bytes, model, "float32")
    flipped = bytearray(snapshot_bytes)
    flipped[-100] ^= 0xFF
    with pytest.raises(SnapshotError, match="corrupted: its checksum"):
        read_snapshot(bytes(flipped), model, "bfloat16")
    edited = _snapshot_with_header(snapshot_bytes, sequence={"answer": "logits"})
    with pytest.raises(SnapshotError, match="corrupted: its checksum"):
        read_snapshot(edited, model, "bfloat16")
    with pytest.raises(SnapshotError, match="not a sequence snapshot"):
        read_snapshot(b"PK\x03\x04" + snapshot_bytes, model, "bfloat16")
    with pytest.raises(SnapshotError, match="header is unreadable"):
        read_snapshot(MAGIC + struct.pack("<I", 8) + b"\xff" * 20, model, "bfloat16")


def test_snapshots_beyond_the_bound_are_refused(snapshot_bytes):
    model = model_identity(FAKE_MODEL_METADATA)
    size = len(snapshot_bytes)
    with pytest.raises(SnapshotError, match=f"{size} bytes, more than .* {size - 1} bytes"):
        read_snapshot(snapshot_bytes, model, "bfloat16", max_bytes=size - 1)
    read_snapshot(snapshot_bytes, model, "bfloat16", max_bytes=size)
    tracker, _ = fake_pair(False)
    tracker.add_prompt(0, 1, points=fake_click(1)[0], labels=fake_click(1)[1])
    tracker.track(0, fake_frame(0))
    with pytest.raises(SnapshotError, match="max_snapshot_bytes"):
        snapshot_of(tracker, max_bytes=1000)


def test_restore_needs_a_fresh_tracker_made_for_the_snapshot(snapshot_bytes):
    from sam2_triton.python_backend.video.snapshots import restore_tracker

    snapshot = read_snapshot(snapshot_bytes, model_identity(FAKE_MODEL_METADATA), "bfloat16")
    plain, _ = fake_pair(False)  # the snapshot is of a SAMURAI sequence
    with pytest.raises(SnapshotError, match="SAMURAI settings"):
        restore_tracker(plain, snapshot)
    used, _ = fake_pair(True)
    used.track(0, fake_frame(0))
    with pytest.raises(SnapshotError, match="fresh sequence"):
        restore_tracker(used, snapshot)


# -- the exported tiny model (ONNX Runtime) -----------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize("samurai", [False, True], ids=["sam2", "samurai"])
def test_restored_tracker_equals_the_uninterrupted_run(exported, samurai):
    """Prompts on frame 0, a correction on frame 2, a new object prompted for frame 4: snapshot
    after frame 3, restore into a fresh tracker with fresh networks, and every later frame's
    logits and masks equal the uninterrupted run's."""
    from sam2_triton.export.metadata import load_metadata
    from sam2_triton.python_backend.video.networks import OnnxVideoNetworks

    frames = synthetic_frames(9)
    networks = OnnxVideoNetworks(exported.directory)
    metadata = load_metadata(exported.directory)
    tracker = VideoTracker(networks, metadata, samurai=samurai_settings(samurai))
    tracker.add_prompt(0, 1, points=CLICK[0], labels=CLICK[1])
    tracker.add_prompt(0, 2, box=BOX)
    for t in range(4):
        tracker.track(t, frames[t])
        if t == 2:
            tracker.add_prompt(2, 1, points=[[52.0, 40.0]], labels=[0], clear_old_points=False)
            tracker.correct(2)
    tracker.add_prompt(4, 3, box=[10.0, 70.0, 60.0, 110.0])
    data = tracker.snapshot(model_identity(metadata))
    restored = VideoTracker.from_snapshot(data, OnnxVideoNetworks(exported.directory), metadata)
    for t in range(4, len(frames)):
        expected = tracker.track(t, frames[t])
        got = restored.track(t, frames[t])
        assert_same_result(got, expected)
        assert expected.present.any()  # masks themselves are compared, not "absent" everywhere
    if samurai:
        assert any(s.motion.stable_count > 0 for s in tracker.objects.values())


# -- the request handler: TAKE_SNAPSHOT, RESTORE_SNAPSHOT -----------------------------------------


def snapshot_handler(samurai_mode: bool = False, max_snapshot_bytes: int = 64 << 20, **identity):
    """A VideoRequestHandler over fake networks (its own store), serving FAKE_MODEL_METADATA."""
    from test_video_sequences import LIMITS, settings

    from sam2_triton.python_backend.video.frame_requests import VideoRequestHandler
    from sam2_triton.python_backend.video.sequences import SequenceStore

    video = settings(max_snapshot_bytes=max_snapshot_bytes)

    def make_tracker(options):
        return VideoTracker(
            FakeNetworks(_bounded_script),
            FAKE_MODEL_METADATA,
            num_frames=options.num_frames,
            samurai=options.samurai,
        )

    model = {**model_identity(FAKE_MODEL_METADATA), **identity}
    return VideoRequestHandler(SequenceStore(make_tracker, video), video, LIMITS, model)


def request(sequence_id=7, start=False, frame=None, **tensors):
    from sam2_triton.python_backend.video.frame_requests import parse_frame_request

    image = None if frame is None else fake_frame(frame)
    return parse_frame_request(sequence_id, start, False, tensors, image, SamuraiSettings.load())


def fake_click_tensors(obj_id: int) -> dict[str, np.ndarray]:
    (coords, labels) = fake_click(obj_id)
    return {
        "POINT_OBJ_IDS": np.array([obj_id], np.int64),
        "POINT_COORDS": np.array([coords], np.float32),
        "POINT_LABELS": np.array([labels], np.int32),
    }


TAKE = {"TAKE_SNAPSHOT": np.array([True])}


@pytest.mark.parametrize("samurai", [False, True], ids=["sam2", "samurai"])
def test_handler_resumes_a_sequence_on_another_server(samurai):
    """A snapshot taken with the request of frame 4 (the state before it) starts the sequence
    on a second handler; both answer every later frame alike, in the sequence's answer format."""
    first, second = snapshot_handler(), snapshot_handler()
    options = {"ANSWER": np.array([b"logits"], object), "ANSWER_SIZE": np.array([8, 8])}
    if samurai:
        options["SAMURAI"] = np.array([True])
        options["STABLE_FRAMES_THRESHOLD"] = np.array([2], np.int32)
    first.respond(request(start=True, frame=0, **fake_click_tensors(1), **options))
    for t in range(1, 4):
        first.respond(request(frame=t))
    answer = first.respond(request(frame=4, **TAKE, **fake_click_tensors(2)))
    data = answer["SNAPSHOT"].tobytes()
    assert (
        answer["TRACKED_FRAME"].tolist() == [4]
        and snapshot_header(data)["state"]["last_frame"] == 3
    )  # the state before the request
    assert first.respond(request(frame=5))["SNAPSHOT"].shape == (0,)  # only when asked for
    restored = {"RESTORE_SNAPSHOT": np.frombuffer(data, np.uint8)}
    resumed = second.respond(request(start=True, frame=4, **restored, **fake_click_tensors(2)))
    assert resumed["MASK_LOGITS"].shape[1:] == (8, 8)  # the answer format came with it
    expected = first.respond(request(frame=6))
    second.respond(request(frame=5))
    got = second.respond(request(frame=6))
    for name in ("OBJ_IDS", "MASK_LOGITS", "SCORES", "OBJECT_SCORE_LOGITS", "TRACKED_FRAME"):
        np.testing.assert_array_equal(got[name], expected[name])


def test_handler_refusals_leave_no_sequence():
    handler = snapshot_handler()
    handler.respond(request(start=True, frame=0, **fake_click_tensors(1)))
    data = handler.respond(request(frame=1, **TAKE))["SNAPSHOT"]
    restored = {"RESTORE_SNAPSHOT": data}
    with pytest.raises(InputError, match="NUM_FRAMES cannot be sent with RESTORE_SNAPSHOT"):
        request(start=True, NUM_FRAMES=np.array([9]), **restored)
    with pytest.raises(InputError, match="RESTORE_SNAPSHOT can only be sent with the sequence"):
        request(**restored)
    other = snapshot_handler(name="large")
    with pytest.raises(SnapshotError, match="another model: its name is 'tiny'") as refused:
        other.respond(request(sequence_id=8, start=True, frame=1, **restored))
    assert refused.value.reason == "snapshot_refused"
    with pytest.raises(InputError, match="could not start"):
        other.store.get(8)
    small = snapshot_handler(max_snapshot_bytes=data.size - 1)
    small.respond(request(start=True, frame=0, **fake_click_tensors(1)))
    with pytest.raises(SnapshotError, match="max_snapshot_bytes"):
        small.respond(request(frame=1, **TAKE))
    assert small.store.get(7).last_frame == 0  # the refused request changed nothing

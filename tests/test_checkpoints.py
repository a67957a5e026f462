"""Checkpoint download (checksum-verified) and loading, with clear errors for bad files."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
import time

import pytest
import torch

from sam2_triton.configs import get_model
from sam2_triton.errors import CheckpointError
from sam2_triton.export import checkpoints as ck


def test_loads_official_format(test_checkpoint):
    spec = get_model("tiny")
    path = test_checkpoint("tiny")
    model = ck.build_sam2_model(spec, checkpoint=path)
    saved = torch.load(path, map_location="cpu", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.build_sam2_model(get_model("tiny"), checkpoint=tmp_path / "nope.pt")


def test_corrupt_checkpoint(tmp_path, test_checkpoint):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(test_checkpoint("tiny").read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        ck.load_state_dict(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        ck.load_state_dict(garbage)


def test_wrong_format(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="not in the official SAM 2 format"):
        ck.load_state_dict(path)


def test_checkpoint_of_another_size(test_checkpoint):
    with pytest.raises(CheckpointError) as info:
        ck.build_sam2_model(get_model("small"), checkpoint=test_checkpoint("tiny"))
    message = str(info.value)
    assert "does not match config configs/sam2.1/sam2.1_hiera_s.yaml" in message
    assert "missing keys" in message and "looks like a 'tiny' checkpoint" in message


def test_checkpoint_of_another_family(test_checkpoint):
    with pytest.raises(CheckpointError, match="unexpected keys.*looks like a 'tiny' checkpoint"):
        ck.build_sam2_model(get_model("sam2_tiny"), checkpoint=test_checkpoint("tiny"))


def test_random_weights_must_be_explicit(test_checkpoint):
    with pytest.raises(CheckpointError, match="ask for random weights explicitly"):
        ck.build_sam2_model(get_model("tiny"))
    with pytest.raises(CheckpointError, match="choose one"):
        ck.build_sam2_model(
            get_model("tiny"), checkpoint=test_checkpoint("tiny"), random_weights=True
        )
    with pytest.warns(UserWarning, match="RANDOM weights"):
        ck.build_sam2_model(get_model("tiny"), random_weights=True)


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server over tmp_path/served (loopback only)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _spec_for(payload: bytes, name: str = "model.pt"):
    return dataclasses.replace(
        get_model("tiny"),
        checkpoint=name,
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )


def test_download_verifies_checksum(file_server, tmp_path):
    served, base = file_server
    payload = b"checkpoint bytes" * 1000
    (served / "model.pt").write_bytes(payload)
    spec = _spec_for(payload)
    dest = tmp_path / "checkpoints"
    path = ck.download_checkpoint(spec, dest, url=f"{base}/model.pt", progress=False)
    assert path.read_bytes() == payload
    # present and valid: kept without downloading again
    assert ck.download_checkpoint(spec, dest, url=f"{base}/missing.pt", progress=False) == path


def test_download_rejects_wrong_checksum(file_server, tmp_path):
    served, base = file_server
    (served / "model.pt").write_bytes(b"tampered" * 100)
    spec = dataclasses.replace(_spec_for(b"original" * 100))
    dest = tmp_path / "checkpoints"
    with pytest.raises(CheckpointError, match="downloaded file rejected.*SHA-256"):
        ck.download_checkpoint(spec, dest, url=f"{base}/model.pt", progress=False)
    assert list(dest.iterdir()) == []  # nothing half-written is left behind


def test_download_offline_names_the_file_to_place(file_server, tmp_path):
    _, base = file_server
    spec = _spec_for(b"x")
    with pytest.raises(CheckpointError) as info:
        ck.download_checkpoint(spec, tmp_path, url=f"{base}/absent.pt", progress=False)
    message = str(info.value)
    assert f"place it at {tmp_path / 'model.pt'}" in message and spec.sha256 in message


def test_existing_corrupt_file_is_reported(tmp_path):
    spec = _spec_for(b"good" * 10)
    (tmp_path / "model.pt").write_bytes(b"bad")
    with pytest.raises(CheckpointError, match="has 3 bytes"):
        ck.download_checkpoint(spec, tmp_path, url="http://127.0.0.1:9/none", progress=False)


# -- which weights an export uses: present file, download, or random weights -----------------


@pytest.fixture
def closed_port_url():
    """An address on the loopback interface where nothing listens (connection refused)."""
    from conftest import free_port

    return f"http://127.0.0.1:{free_port()}/model.pt"


def test_resolve_offline_falls_back_to_random_weights(closed_port_url, tmp_path):
    spec = _spec_for(b"official" * 100)
    started = time.monotonic()
    weights = ck.resolve_weights(
        spec,
        directory=tmp_path,
        download_if_missing=True,
        random_if_missing=True,
        url=closed_port_url,
        progress=False,
    )
    assert time.monotonic() - started < 5.0
    assert weights.random and weights.path is None
    assert weights.random_reason.startswith("download failed: ")
    assert "refused" in weights.random_reason.lower()
    assert weights.describe().startswith("weights: RANDOM (download failed: ")
    assert "meaningless" in weights.describe()
    assert weights.metadata()["random_weights"] is True
    assert list(tmp_path.iterdir()) == []  # no partial file at the destination


def test_resolve_offline_without_fallback_is_an_error(closed_port_url, tmp_path):
    with pytest.raises(ck.CheckpointDownloadError) as info:
        ck.resolve_weights(
            _spec_for(b"x"), directory=tmp_path, download_if_missing=True, url=closed_port_url
        )
    assert "refused" in info.value.reason.lower()
    assert f"place it at {tmp_path / 'model.pt'}" in str(info.value)


def test_resolve_uses_present_file_with_official_checksum(tmp_path):
    payload = b"official" * 100
    (tmp_path / "model.pt").write_bytes(payload)
    weights = ck.resolve_weights(
        _spec_for(payload),
        directory=tmp_path,
        download_if_missing=True,
        random_if_missing=True,
        url="http://127.0.0.1:9/never-asked",
    )
    assert weights.path == tmp_path / "model.pt" and not weights.downloaded
    assert weights.official and weights.metadata()["random_weights"] is False
    assert weights.describe() == f"weights: official checkpoint {weights.path} (sha256 verified)"


def test_resolve_refuses_present_file_with_wrong_checksum(tmp_path):
    """The rule: with download_if_missing, a present file must be the official one; it is neither
    replaced by a download nor skipped for random weights. Without it, it is used as given."""
    spec = _spec_for(b"official" * 100)
    present = tmp_path / "model.pt"
    present.write_bytes(b"tampered" * 100)  # same size, other SHA-256
    with pytest.raises(CheckpointError) as info:
        ck.resolve_weights(
            spec, directory=tmp_path, download_if_missing=True, random_if_missing=True
        )
    message = str(info.value)
    assert f"refusing {present}" in message and "SHA-256" in message
    assert f"--checkpoint {present}" in message
    assert present.read_bytes() == b"tampered" * 100  # left as it was
    as_given = ck.resolve_weights(spec, directory=tmp_path, random_if_missing=True)
    assert as_given.path == present and not as_given.official
    assert "not the official" in as_given.describe()


def test_resolve_downloads_verifies_and_uses(file_server, tmp_path):
    served, base = file_server
    payload = b"checkpoint bytes" * 1000
    (served / "model.pt").write_bytes(payload)
    dest = tmp_path / "checkpoints"
    weights = ck.resolve_weights(
        _spec_for(payload),
        directory=dest,
        download_if_missing=True,
        random_if_missing=True,
        url=f"{base}/model.pt",
        progress=False,
    )
    assert weights.path == dest / "model.pt" and weights.path.read_bytes() == payload
    assert weights.downloaded and weights.official and not weights.random
    assert "(downloaded, sha256 verified)" in weights.describe()
    assert list(dest.iterdir()) == [dest / "model.pt"]  # no temporary file left beside it


def test_resolve_rejected_download_leaves_nothing(file_server, tmp_path):
    served, base = file_server
    (served / "model.pt").write_bytes(b"tampered" * 100)
    spec = _spec_for(b"original" * 100)
    dest = tmp_path / "checkpoints"
    weights = ck.resolve_weights(
        spec,
        directory=dest,
        download_if_missing=True,
        random_if_missing=True,
        url=f"{base}/model.pt",
        progress=False,
    )
    assert weights.random
    assert weights.random_reason.startswith("download failed: downloaded file rejected:")
    assert list(dest.iterdir()) == []
    with pytest.raises(ck.CheckpointDownloadError, match="downloaded file rejected"):
        ck.resolve_weights(spec, directory=dest, download_if_missing=True, url=f"{base}/model.pt")
    assert list(dest.iterdir()) == []


def test_download_gives_up_within_the_connect_timeout(tmp_path):
    """A host that accepts the connection but never answers: the opening is abandoned after
    connect_timeout_s rather than the (long) read timeout."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/model.pt"
        started = time.monotonic()
        with pytest.raises(ck.CheckpointDownloadError) as info:
            ck.download_checkpoint(
                _spec_for(b"x"), tmp_path, url=url, connect_timeout_s=0.5, progress=False
            )
        elapsed = time.monotonic() - started
    assert info.value.reason == "no connection within 0.5 s"
    assert 0.4 < elapsed < 5.0
    assert list(tmp_path.iterdir()) == []

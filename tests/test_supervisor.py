"""The served repository's lifecycle without a server: finding stub processes, reloading a model
whose stub died, the drain order and the repository API, the launcher's flags, the stub's fast
exit and `sam2-triton serve`'s exit status. The real server: tests/test_server_lifecycle.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sam2_triton.python_backend.stub_process import in_python_backend_stub
from sam2_triton.serving.local_server import (
    DEFAULT_ADDRESS,
    LocalTritonServer,
    ServerError,
    local_host,
)
from sam2_triton.serving.supervisor import (
    ADMIN_HEADER,
    AdminError,
    RepositoryAdmin,
    StubProcess,
    StubSupervisor,
    drain_order,
    python_stubs,
    remove_shm_regions,
)

SERVER_PID = 4242
REGION = "triton_python_backend_shm_region_"


# -- stub processes from /proc -----------------------------------------------------------------


def fake_process(proc: Path, pid: int, argv: list[str], parent: int, state: str = "S") -> None:
    entry = proc / str(pid)
    entry.mkdir()
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (entry / "status").write_text(f"Name:\tx\nState:\t{state} (x)\nPid:\t{pid}\nPPid:\t{parent}\n")


def stub_argv(model: str, instance: str, region: str) -> list[str]:
    return [
        "/tmp/backends/python/triton_python_backend_stub",
        f"/repo/{model}/1/model.py",
        region,
        "67108864",
        "67108864",
        str(SERVER_PID),
        "/tmp/backends/python",
        "336",
        instance,
        "DEFAULT",
    ]


def test_python_stubs_are_the_live_stub_children_of_the_server(tmp_path):
    video = stub_argv("track_video", "track_video_0_0", REGION + "a")
    fake_process(tmp_path, 10, video, SERVER_PID)
    fake_process(tmp_path, 11, stub_argv("network", "network_0_1", REGION + "b"), SERVER_PID)
    # a dead stub the server has not reaped yet (a zombie)
    fake_process(tmp_path, 12, stub_argv("segment", "segment_0_0", REGION + "c"), SERVER_PID, "Z")
    fake_process(tmp_path, 13, stub_argv("other", "other_0_0", REGION + "d"), 1)  # another parent
    fake_process(tmp_path, 14, ["/usr/bin/python3", "x.py"], SERVER_PID)  # not a stub
    (tmp_path / "self").mkdir()
    stubs = python_stubs(SERVER_PID, proc=tmp_path)
    assert stubs == {
        10: StubProcess(10, "track_video", "track_video_0_0", REGION + "a"),
        11: StubProcess(11, "network", "network_0_1", REGION + "b"),
    }


def test_python_stubs_of_this_process_are_none():
    assert python_stubs(os.getpid()) == {}  # the real /proc: pytest has no stub children


def test_remove_shm_regions_removes_only_python_backend_regions(tmp_path):
    for name in (REGION + "a", REGION + "b", "someone_else"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_shm_regions([REGION + "a", REGION + "gone", "someone_else"], tmp_path)
    assert removed == [REGION + "a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["someone_else", REGION + "b"]


# -- reloading a model whose stub died ----------------------------------------------------------


class FakeAdmin:
    """Records repository-API calls; a load can be made to fail `failures` times."""

    def __init__(self, sequence_models=("track_video",), failures: int = 0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.sequence_models = set(sequence_models)
        self.failures = failures
        self.on_load = lambda model: None

    def config(self, model: str) -> dict:
        return {"sequence_batching": {}} if model in self.sequence_models else {}

    def unload(self, model: str) -> None:
        self.calls.append(("unload", model))

    def load(self, model: str) -> None:
        self.calls.append(("load", model))
        if self.failures:
            self.failures -= 1
            raise AdminError(f"POST /v2/repository/models/{model}/load: HTTP 400 failed")
        self.on_load(model)


class FakeProcesses:
    """The server's stubs, changed by the test (a kill) and by loads (new pids)."""

    def __init__(self) -> None:
        self.stubs: dict[int, StubProcess] = {}
        self.next_pid = 100

    def add(self, model: str) -> int:
        pid, self.next_pid = self.next_pid, self.next_pid + 1
        self.stubs[pid] = StubProcess(pid, model, f"{model}_0_0", f"{REGION}{pid}")
        return pid

    def scan(self, server_pid: int) -> dict[int, StubProcess]:
        assert server_pid == SERVER_PID
        return dict(self.stubs)


def supervisor_with(processes, admin, tmp_path, **kwargs) -> StubSupervisor:
    defaults = dict(scan=processes.scan, retry_delay_s=0.0, shm_dir=tmp_path, leak_check_s=0.0)
    return StubSupervisor(SERVER_PID, admin, **{**defaults, **kwargs})  # type: ignore[arg-type]


def test_a_dead_stub_gets_its_model_reloaded_and_logged(tmp_path, caplog):
    processes, admin = FakeProcesses(), FakeAdmin()
    video = processes.add("track_video")
    processes.add("image_encoder")
    admin.on_load = processes.add  # the reloaded model has a new stub
    supervisor = supervisor_with(processes, admin, tmp_path)
    supervisor._known = processes.scan(SERVER_PID)
    assert supervisor.check() == [] and admin.calls == []

    del processes.stubs[video]  # killed
    with caplog.at_level(logging.WARNING, logger="sam2_triton.serving.supervisor"):
        [recovery] = supervisor.check()
    assert admin.calls == [("unload", "track_video"), ("load", "track_video")]
    assert (recovery.model, recovery.instance) == ("track_video", "track_video_0_0")
    assert recovery.pid == video
    assert recovery.reloaded_s is not None and recovery.error is None
    assert recovery.leaked is False  # its region is gone: Triton freed the dead instance
    text = caplog.text
    assert "stub of model 'track_video' died (instance track_video_0_0" in text
    assert "sequences it held are lost (their next request must carry START)" in text
    assert "model 'track_video' reloaded" in text
    # the new stub is known: the next round finds nothing to do
    assert supervisor.check() == [] and len(admin.calls) == 2
    assert REGION + str(video) in supervisor.regions_seen


def test_a_dead_network_stub_is_reloaded_without_talk_of_sequences(tmp_path, caplog):
    processes, admin = FakeProcesses(), FakeAdmin()
    encoder = processes.add("image_encoder")
    admin.on_load = processes.add
    supervisor = supervisor_with(processes, admin, tmp_path)
    supervisor._known = processes.scan(SERVER_PID)
    del processes.stubs[encoder]
    with caplog.at_level(logging.ERROR, logger="sam2_triton.serving.supervisor"):
        supervisor.check()
    assert "stub of model 'image_encoder' died" in caplog.text
    assert "sequences" not in caplog.text


def test_a_failing_load_is_retried_then_reported_as_unavailable(tmp_path, caplog):
    processes, admin = FakeProcesses(), FakeAdmin(failures=2)
    video = processes.add("track_video")
    admin.on_load = processes.add
    supervisor = supervisor_with(processes, admin, tmp_path, load_attempts=3)
    supervisor._known = processes.scan(SERVER_PID)
    del processes.stubs[video]
    [recovery] = supervisor.check()
    assert admin.calls.count(("load", "track_video")) == 3 and recovery.reloaded_s is not None

    admin.failures = 5
    del processes.stubs[max(processes.stubs)]
    with caplog.at_level(logging.ERROR, logger="sam2_triton.serving.supervisor"):
        [recovery] = supervisor.check()
    assert recovery.reloaded_s is None and "HTTP 400" in (recovery.error or "")
    assert "could not be reloaded: it stays unavailable" in caplog.text
    assert "/v2/health/ready reports not ready" in caplog.text


def test_a_stub_dying_during_a_reload_is_found_in_the_next_round(tmp_path):
    processes, admin = FakeProcesses(), FakeAdmin()
    video = processes.add("track_video")
    encoder = processes.add("image_encoder")

    def load(model):
        processes.add(model)
        processes.stubs.pop(encoder, None)  # another stub dies while track_video reloads

    admin.on_load = load
    supervisor = supervisor_with(processes, admin, tmp_path)
    supervisor._known = processes.scan(SERVER_PID)
    del processes.stubs[video]
    assert [r.model for r in supervisor.check()] == ["track_video"]
    admin.on_load = processes.add
    assert [r.model for r in supervisor.check()] == ["image_encoder"]


def test_a_dead_instance_that_keeps_its_region_is_reported_as_leaked(tmp_path, caplog):
    processes, admin = FakeProcesses(), FakeAdmin()
    video = processes.add("track_video")
    admin.on_load = processes.add
    (tmp_path / f"{REGION}{video}").write_bytes(b"x")  # Triton did not free it
    supervisor = supervisor_with(processes, admin, tmp_path)
    supervisor._known = processes.scan(SERVER_PID)
    del processes.stubs[video]
    with caplog.at_level(logging.WARNING, logger="sam2_triton.serving.supervisor"):
        [recovery] = supervisor.check()
    assert recovery.leaked is True
    assert "dead instance of model 'track_video' was not freed" in caplog.text


def test_the_supervisor_thread_reloads_and_stops(tmp_path):
    processes, admin = FakeProcesses(), FakeAdmin()
    video = processes.add("track_video")
    reloaded = threading.Event()

    def load(model):
        processes.add(model)
        reloaded.set()

    admin.on_load = load
    supervisor = supervisor_with(processes, admin, tmp_path, interval_s=0.01).start()
    try:
        del processes.stubs[video]
        assert reloaded.wait(5.0)
    finally:
        supervisor.stop()
    assert not supervisor._thread.is_alive()
    assert [r.model for r in supervisor.recoveries] == ["track_video"]


# -- draining: the order, and the repository API over HTTP ------------------------------------


CONFIGS = {
    "track_video": {"sequence_batching": {"max_sequence_idle_microseconds": 1}},
    "segment": {"ensemble_scheduling": {"step": [{"model_name": "preprocess_image"}]}},
    "encode_image": {
        "ensemble_scheduling": {
            "step": [{"model_name": "preprocess_image"}, {"model_name": "image_encoder"}]
        }
    },
    "segment_interactive": {},
    "image_encoder": {},
    "preprocess_image": {},
    "memory_attention": {},
}


def test_drain_order_callers_then_ensemble_steps_and_called_models():
    assert drain_order(CONFIGS, called=["memory_attention", "image_encoder"]) == [
        ["encode_image", "segment", "segment_interactive", "track_video"],
        ["image_encoder", "memory_attention", "preprocess_image"],
    ]
    assert drain_order({"a": {}}) == [["a"]]


class FakeTriton(BaseHTTPRequestHandler):
    """Triton's repository API: index, config, load, unload (unloading takes two index polls;
    forever for models in `stuck`), behind the admin key."""

    key = "k"
    states: dict[str, str] = {}
    unloading: dict[str, int] = {}
    stuck: set[str] = set()
    log: list[str] = []

    def _answer(self, code: int, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        model = self.path.split("/")[3]
        self._answer(200, CONFIGS[model])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get(ADMIN_HEADER) != self.key:
            return self._answer(403, {"error": "This API is restricted"})
        if self.path == "/v2/repository/index":
            for model in list(self.unloading):
                self.unloading[model] -= 1
                if not self.unloading[model]:
                    del self.unloading[model]
                    self.states[model] = "UNAVAILABLE"
            ready_only = json.loads(body or b"{}").get("ready", False)
            entries = [
                {"name": m, "version": "1", "state": s}
                for m, s in sorted(self.states.items())
                if s == "READY" or not ready_only
            ]
            return self._answer(200, entries)
        model, action = self.path.split("/")[4:6]
        self.log.append(f"{action} {model}")
        if action == "unload":
            self.states[model] = "UNLOADING"
            self.unloading[model] = 10**9 if model in self.stuck else 2
        elif model == "broken":
            return self._answer(400, {"error": "failed to load 'broken'"})
        else:
            self.states[model] = "READY"
        self._answer(200)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_triton():
    FakeTriton.states = dict.fromkeys(CONFIGS, "READY")
    FakeTriton.unloading, FakeTriton.log, FakeTriton.stuck = {}, [], set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTriton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_repository_admin_drains_wave_by_wave(fake_triton):
    admin = RepositoryAdmin(fake_triton, "k")
    assert admin.ready_models() == sorted(CONFIGS)
    assert admin.drain(timeout_s=10.0, called=["memory_attention"], poll_s=0.0) == []
    assert FakeTriton.log == [
        "unload encode_image",
        "unload segment",
        "unload segment_interactive",
        "unload track_video",
        "unload image_encoder",
        "unload memory_attention",
        "unload preprocess_image",
    ]
    assert set(admin.states().values()) == {"UNAVAILABLE"}


def test_repository_admin_gives_up_draining_after_its_timeout(fake_triton):
    FakeTriton.stuck = {"segment"}  # a request in flight that never ends
    admin = RepositoryAdmin(fake_triton, "k")
    assert admin.drain(timeout_s=0.2, poll_s=0.01) == ["segment"]
    assert "unload image_encoder" not in FakeTriton.log  # the second wave was not started


def test_repository_admin_needs_the_key_and_reports_failures(fake_triton):
    with pytest.raises(AdminError, match="HTTP 403 .*restricted"):
        RepositoryAdmin(fake_triton, "wrong").ready_models()
    admin = RepositoryAdmin(fake_triton, "k")
    with pytest.raises(AdminError, match="HTTP 400 .*failed to load 'broken'"):
        admin.load("broken")
    admin.load("segment")
    assert FakeTriton.log[-1] == "load segment"
    with pytest.raises(AdminError, match="/v2/repository/index"):
        RepositoryAdmin("http://127.0.0.1:1", "k").ready_models(timeout_s=1.0)


# -- the launcher's flags -----------------------------------------------------------------------


def test_the_server_listens_on_loopback_with_admin_apis_behind_a_random_key(tmp_path):
    server = LocalTritonServer(tmp_path)
    other = LocalTritonServer(tmp_path)
    assert DEFAULT_ADDRESS == "127.0.0.1" and server.http_url == "127.0.0.1:8000"
    flags = server.access_flags()
    for kind in ("http", "grpc", "metrics"):
        assert f"--{kind}-address=127.0.0.1" in flags
    apis = "model-repository,shared-memory,trace,logging"
    assert f"--http-restricted-api={apis}:sam2-admin-key={server.admin_key}" in flags
    assert f"--grpc-restricted-protocol={apis}:sam2-admin-key={server.admin_key}" in flags
    assert len(server.admin_key) >= 32 and server.admin_key != other.admin_key
    lifecycle = server.lifecycle_flags()
    assert "--model-control-mode=explicit" in lifecycle and "--load-model=*" in lifecycle
    assert "--exit-timeout-secs=0" in lifecycle  # stop() drains the models first


def test_server_address_choices(tmp_path):
    assert LocalTritonServer(tmp_path, address="0.0.0.0").http_url == "127.0.0.1:8000"
    assert LocalTritonServer(tmp_path, address="::", http_port=9).http_url == "[::1]:9"
    assert LocalTritonServer(tmp_path, address="10.1.2.3").grpc_url == "10.1.2.3:8001"
    assert local_host("::1") == "[::1]"
    with pytest.raises(ServerError, match="'localhost' is not an IP address"):
        LocalTritonServer(tmp_path, address="localhost")
    server = LocalTritonServer(tmp_path, admin_key="chosen", supervise=False)
    assert server.admin_key == "chosen"
    lifecycle = server.lifecycle_flags()
    assert not any(flag.startswith("--model-control-mode") for flag in lifecycle)
    assert "--exit-timeout-secs=20" in lifecycle


# -- the stub's exit ----------------------------------------------------------------------------

FAST_EXIT_SCRIPT = """
import atexit, sys
atexit.register(print, "registered before: skipped")
sys.builtin_module_names = sys.builtin_module_names + ("c_python_backend_utils",)
from sam2_triton.python_backend.stub_process import skip_teardown_at_exit
assert skip_teardown_at_exit() and skip_teardown_at_exit()
atexit.register(print, "registered after: runs")
print("written before exit;", end=" ")
"""


def test_inside_a_stub_the_process_ends_without_teardown():
    assert not in_python_backend_stub()  # pytest is no stub
    done = subprocess.run(
        [sys.executable, "-c", FAST_EXIT_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # stdout is a pipe (block-buffered): what was printed is flushed; the handler registered
    # earlier is not run
    assert done.stdout == "written before exit; registered after: runs\n"


# -- sam2-triton serve ------------------------------------------------------------------------


class FakeServer:
    """Stands in for LocalTritonServer in `cmd_serve`: SIGTERMs this process once running."""

    made: list[dict] = []
    exit_status = 0

    def __init__(self, repository, **kwargs) -> None:
        self.made.append(kwargs)
        self.http_url, self.grpc_url, self.host = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1"
        self.log_file = "log"
        self._checks = 0

    def start(self, timeout_s):
        return self

    def is_running(self) -> bool:
        self._checks += 1
        if self._checks == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # caught by cmd_serve's handler
        return True

    def log_tail(self) -> str:
        return ""

    def stop(self) -> int:
        return self.exit_status


@pytest.mark.parametrize("exit_status", [0, 1])
def test_serve_defaults_and_exit_status(tmp_path, monkeypatch, capsys, exit_status):
    import sam2_triton.serving.local_server as local_server
    from sam2_triton.cli import main

    monkeypatch.setattr(local_server, "LocalTritonServer", FakeServer)
    monkeypatch.setattr(FakeServer, "exit_status", exit_status)
    monkeypatch.setattr(FakeServer, "made", [])
    monkeypatch.delenv("SAM2_TRITON_ADMIN_KEY", raising=False)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["serve", "--repository", str(tmp_path)]) == exit_status
        monkeypatch.setenv("SAM2_TRITON_ADMIN_KEY", "secret")
        main(["serve", "--repository", str(tmp_path), "--address", "0.0.0.0", "--no-supervise"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    first, second = FakeServer.made
    assert first["address"] == "127.0.0.1" and first["admin_key"] is None
    assert first["supervise"] is True
    assert second["address"] == "0.0.0.0" and second["admin_key"] == "secret"
    assert second["supervise"] is False
    out = capsys.readouterr().out
    assert "administrative APIs disabled" in out and "with header sam2-admin-key" in out
    assert f"(exit status {exit_status})" in out

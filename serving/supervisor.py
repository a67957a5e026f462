"""A served repository's lifecycle: reload a model whose Python-backend stub died; drain
models before the server stops.

Triton 2.51 neither restarts a dead stub nor reports it: every request to the model fails with
"Stub process '<instance>' is not healthy" while `/v2/health/ready` stays 200. `StubSupervisor`
polls the server's child processes and, when a stub is gone, unloads and loads its model through
the repository API (the server runs with `--model-control-mode=explicit`, that API restricted to
a key only the launcher knows). `RepositoryAdmin.drain` unloads every model in dependency order,
so that a stopping server has no open sequence and no model left to wait for. Design notes and
measured times: docs/serving.md#reliability
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STUB_EXECUTABLE = "triton_python_backend_stub"
SHM_REGION_PREFIX = "triton_python_backend_shm_region_"
SHM_DIR = Path("/dev/shm")
# Header and APIs of Triton's `--http-restricted-api` / `--grpc-restricted-protocol`: the
# administrative APIs (load / unload models, register shared memory, trace files, log settings).
ADMIN_HEADER = "sam2-admin-key"
ADMIN_APIS = ("model-repository", "shared-memory", "trace", "logging")


@dataclass(frozen=True)
class StubProcess:
    """A live Python-backend stub: one model instance of the server."""

    pid: int
    model: str  # from the stub's model.py path: <repository>/<model>/<version>/model.py
    instance: str  # e.g. track_video_0_0
    shm_region: str  # its shared-memory region, /dev/shm/<shm_region>


def _parent_and_state(status: str) -> tuple[int, str]:
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return int(fields.get("PPid", "0")), fields.get("State", "?")[:1]


def python_stubs(server_pid: int, proc: Path = Path("/proc")) -> dict[int, StubProcess]:
    """The live (not zombie) Python-backend stubs whose parent is `server_pid`, by pid.

    A stub's command line: executable, model.py, shm region, shm sizes, parent pid, backend
    directory, IPC size, instance name, runtime (pb_stub.cc of Triton 2.51).
    """
    stubs = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent, state = _parent_and_state((entry / "status").read_text())
            if parent != server_pid or state == "Z":
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if len(argv) < 9:
            continue
        if Path(argv[0].decode(errors="replace")).name != STUB_EXECUTABLE:
            continue
        model_file = Path(argv[1].decode(errors="replace"))
        stubs[int(entry.name)] = StubProcess(
            pid=int(entry.name),
            model=model_file.parent.parent.name,
            instance=argv[8].decode(errors="replace"),
            shm_region=argv[2].decode(errors="replace"),
        )
    return stubs


def remove_shm_regions(regions: Iterable[str], shm_dir: Path = SHM_DIR) -> list[str]:
    """Delete the Python-backend shared-memory regions among `regions` still in `shm_dir` (for a
    server that exited without cleaning them); return those removed. Other names are ignored."""
    removed = []
    for region in sorted(set(regions)):
        if not region.startswith(SHM_REGION_PREFIX) or "/" in region:
            continue
        try:
            (shm_dir / region).unlink()
        except FileNotFoundError:
            continue
        removed.append(region)
    return removed


class AdminError(Exception):
    """A repository-API call failed (HTTP error or no answer)."""


class RepositoryAdmin:
    """Triton's model-repository API over HTTP, with the key of the restricted APIs."""

    def __init__(self, base_url: str, key: str, header: str = ADMIN_HEADER) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {header: key, "Content-Type": "application/json"}

    def _call(self, method: str, path: str, timeout_s: float, body: bytes | None = None):
        request = urllib.request.Request(
            self.base_url + path, data=body, method=method, headers=self.headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                text = answer.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            raise AdminError(f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise AdminError(f"{method} {path}: {exc}") from None
        return json.loads(text) if text else None

    def states(self, timeout_s: float = 10.0) -> dict[str, str]:
        """Every model of the repository and its state (READY, LOADING, UNLOADING,
        UNAVAILABLE)."""
        index = self._call("POST", "/v2/repository/index", timeout_s, b"{}")
        return {entry["name"]: entry.get("state", "") for entry in index or ()}

    def ready_models(self, timeout_s: float = 10.0) -> list[str]:
        return sorted(m for m, state in self.states(timeout_s).items() if state == "READY")

    def config(self, model: str, timeout_s: float = 10.0) -> dict:
        return self._call("GET", f"/v2/models/{model}/config", timeout_s) or {}

    def load(self, model: str, timeout_s: float = 600.0) -> None:
        """Returns once the model is loaded (or raises AdminError with Triton's reason)."""
        self._call("POST", f"/v2/repository/models/{model}/load", timeout_s, b"{}")

    def unload(self, model: str, timeout_s: float = 10.0) -> None:
        """Starts unloading: the model refuses new requests at once, finishes those in flight."""
        self._call("POST", f"/v2/repository/models/{model}/unload", timeout_s, b"{}")

    def drain(self, timeout_s: float, called: Iterable[str] = (), poll_s: float = 0.1) -> list[str]:
        """Unload every loaded model, wave by wave (`drain_order`; `called`: models that others
        call through BLS), each wave once the previous one is gone; requests in flight finish
        first. Gives up after `timeout_s`; returns the models still loaded then."""
        deadline = time.monotonic() + timeout_s
        call_s = min(10.0, timeout_s)  # each call: a hung server must not stall the stop
        models = self.ready_models(call_s)
        for wave in drain_order({m: self.config(m, call_s) for m in models}, called):
            for model in wave:
                self.unload(model, call_s)
            while (left := self._loaded(wave, call_s)) and time.monotonic() < deadline:
                time.sleep(poll_s)
            if left:
                return sorted(left)
        return []

    def _loaded(self, models: list[str], timeout_s: float) -> set[str]:
        states = self.states(timeout_s)
        return {m for m in models if states.get(m) in ("READY", "LOADING", "UNLOADING")}


def drain_order(configs: dict[str, dict], called: Iterable[str] = ()) -> list[list[str]]:
    """Models (name -> Triton config as JSON) in two unloading waves: first those nobody calls
    (ensembles, the Python models clients call; unloading a sequence model drops its open
    sequences), then the ensembles' steps and the `called` models (what the first wave calls
    through BLS), so that requests in flight in the first wave can finish. Each wave takes a
    second at least: Triton's Python backend waits 1 s for a stub's heartbeat when unloading."""
    callees = set(called) | {
        step.get("model_name")
        for config in configs.values()
        for step in (config.get("ensemble_scheduling") or {}).get("step", ())
    }
    first = sorted(m for m in configs if m not in callees)
    second = sorted(m for m in configs if m in callees)
    return [wave for wave in (first, second) if wave]


@dataclass
class Recovery:
    """One dead stub and what the supervisor did about it."""

    model: str
    instance: str
    pid: int
    shm_region: str  # the dead instance's shared-memory region
    detected_at: float  # time.monotonic() when the supervisor saw the stub gone
    reloaded_s: float | None = None  # detection -> model loaded again; None if it failed
    error: str | None = None  # the last load failure when reloading did not succeed
    leaked: bool | None = None  # the dead instance was never freed (None: not checked yet)


class StubSupervisor:
    """A daemon thread that checks the server's stubs every `interval_s` and reloads the model
    of any stub that died. `recoveries` lists what happened; `regions_seen` every stub's
    shared-memory region (for the launcher's cleanup after the server exits)."""

    def __init__(
        self,
        server_pid: int,
        admin: RepositoryAdmin,
        interval_s: float = 0.5,
        load_attempts: int = 3,
        retry_delay_s: float = 2.0,
        scan: Callable[[int], dict[int, StubProcess]] = python_stubs,
        clock: Callable[[], float] = time.monotonic,
        shm_dir: Path = SHM_DIR,
        leak_check_s: float = 10.0,
    ) -> None:
        self.server_pid = server_pid
        self.admin = admin
        self.interval_s = interval_s
        self.load_attempts = load_attempts
        self.retry_delay_s = retry_delay_s
        self.scan = scan
        self.clock = clock
        self.shm_dir = shm_dir
        self.leak_check_s = leak_check_s
        self.recoveries: list[Recovery] = []
        self.regions_seen: set[str] = set()
        self._known: dict[int, StubProcess] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sam2-stub-supervisor", daemon=True)

    def start(self) -> StubSupervisor:
        self._known = self._scan()
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop watching (a reload in progress is abandoned: the server is going away)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _scan(self) -> dict[int, StubProcess]:
        stubs = self.scan(self.server_pid)
        self.regions_seen.update(stub.shm_region for stub in stubs.values())
        return stubs

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one failure
                log.exception("stub supervisor: check failed")

    def check(self) -> list[Recovery]:
        """One round: reload the models whose stubs vanished since the last round."""
        current = self._scan()
        dead = [stub for pid, stub in self._known.items() if pid not in current]
        recoveries = []
        for model in sorted({stub.model for stub in dead}):
            if self._stop.is_set():
                break
            recoveries.append(self._reload(model, [s for s in dead if s.model == model]))
        if recoveries:
            # Stubs of other models that die during a reload are still `known`: the next round
            # sees them gone. The reloaded models' stubs are the new ones.
            reloaded = {r.model for r in recoveries}
            after = self._scan()
            current = {pid: s for pid, s in self._known.items() if s.model not in reloaded}
            current.update({pid: s for pid, s in after.items() if s.model in reloaded})
        self._known = current
        self._check_leaks()
        return recoveries

    def _check_leaks(self) -> None:
        """Triton frees a dead instance on unload unless a request reached it after it died
        (then, in 2.51, its unload never completes): say so once per recovery."""
        for recovery in self.recoveries:
            if recovery.leaked is not None or recovery.reloaded_s is None:
                continue
            if self.clock() - recovery.detected_at < self.leak_check_s:
                continue
            recovery.leaked = (self.shm_dir / recovery.shm_region).exists()
            if recovery.leaked:
                log.warning(
                    "the dead instance of model %r was not freed (requests reached it after it "
                    "died, and Triton 2.51 then never completes its unload): its shared memory "
                    "stays allocated until the server restarts, and stopping the server will "
                    "end with exit status 1",
                    recovery.model,
                )

    def _holds_sequences(self, model: str) -> bool:
        try:
            return "sequence_batching" in self.admin.config(model)
        except AdminError:
            return False

    def _reload(self, model: str, dead: list[StubProcess]) -> Recovery:
        first = dead[0]
        recovery = Recovery(
            model, first.instance, first.pid, first.shm_region, detected_at=self.clock()
        )
        self.recoveries.append(recovery)
        lost = (
            ", and the sequences it held are lost (their next request must carry START)"
            if self._holds_sequences(model)
            else ""
        )
        log.error(
            "the Python-backend stub of model %r died (instance %s, pid %d): reloading the "
            "model; its requests fail until it is back%s",
            model,
            ", ".join(s.instance for s in dead),
            first.pid,
            lost,
        )
        try:
            self.admin.unload(model)  # drops the dead instance and its sequences
        except AdminError as exc:
            log.warning("unloading model %r failed (%s); loading it anyway", model, exc)
        for attempt in range(1, self.load_attempts + 1):
            try:
                self.admin.load(model)
            except AdminError as exc:
                recovery.error = str(exc)
                log.warning("reloading model %r failed (attempt %d): %s", model, attempt, exc)
                if self._stop.wait(self.retry_delay_s):
                    return recovery
                continue
            recovery.reloaded_s = self.clock() - recovery.detected_at
            recovery.error = None
            log.warning("model %r reloaded %.1f s after its stub died", model, recovery.reloaded_s)
            return recovery
        log.error(
            "model %r could not be reloaded: it stays unavailable and /v2/health/ready reports "
            "not ready (restart the server)",
            model,
        )
        return recovery

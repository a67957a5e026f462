"""Official SAM 2 checkpoints: download with checksum verification, load, and build the model.

The official format is a `torch.save` dict whose "model" entry is the `SAM2Base` state dict.
Loading mirrors `sam2.build_sam._load_checkpoint` (CPU map, `weights_only=True`, strict keys) but
reports problems as one clear `CheckpointError` instead of a bare `RuntimeError`. Downloading
and resolving which weights to use need no torch (it is imported where models are loaded), so
the command line stays quick to start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sam2_triton.configs import ModelSpec, load_models
from sam2_triton.errors import CheckpointError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CHECKPOINT_DIR_ENV = "SAM2_TRITON_CHECKPOINTS"
DEFAULT_CHECKPOINT_DIR = Path("checkpoints")
_CHUNK = 1 << 20
# Opening a download (DNS lookup, connect, TLS, response headers) must finish within this many
# seconds, so that a machine without network gives up quickly; once the transfer runs, it fails
# only when no byte arrives for DOWNLOAD_READ_TIMEOUT_S.
DOWNLOAD_CONNECT_TIMEOUT_S = 10.0
DOWNLOAD_READ_TIMEOUT_S = 60.0

RANDOM_WEIGHTS_WARNING = (
    "using RANDOM weights: exported graphs compute the right function of meaningless "
    "parameters, so every mask they produce is meaningless"
)


def checkpoint_dir(directory: os.PathLike | None = None) -> Path:
    """Where checkpoints live: the argument, else $SAM2_TRITON_CHECKPOINTS, else ./checkpoints."""
    if directory is not None:
        return Path(directory)
    return Path(os.environ.get(CHECKPOINT_DIR_ENV, DEFAULT_CHECKPOINT_DIR))


def checkpoint_path(spec: ModelSpec, directory: os.PathLike | None = None) -> Path:
    return checkpoint_dir(directory) / spec.checkpoint


def sha256_file(path: os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint_file(spec: ModelSpec, path: str | os.PathLike) -> None:
    """Raise CheckpointError unless `path` has the official size and SHA-256 of `spec`."""
    path = Path(path)
    size = path.stat().st_size
    if size != spec.size:
        raise CheckpointError(
            f"{path} has {size} bytes, the official {spec.checkpoint} has {spec.size}: "
            "the file is truncated or not that checkpoint"
        )
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise CheckpointError(
            f"{path} has SHA-256 {digest}, the official {spec.checkpoint} has {spec.sha256}"
        )


class CheckpointDownloadError(CheckpointError):
    """A download that failed or was rejected; `reason` says why in a few words."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def download_checkpoint(
    spec: ModelSpec,
    directory: os.PathLike | None = None,
    *,
    url: str | None = None,
    force: bool = False,
    connect_timeout_s: float = DOWNLOAD_CONNECT_TIMEOUT_S,
    timeout_s: float = DOWNLOAD_READ_TIMEOUT_S,
    progress: bool = True,
) -> Path:
    """Download the official checkpoint of `spec` into `directory` and verify its checksum.

    An existing file that passes verification is kept (one that fails raises CheckpointError).
    The download goes to a hidden temporary file beside the target that replaces it only after
    its size and SHA-256 match `configs/models.yaml`; on any failure it is deleted, so the target
    is never a partial or wrong file. `url` replaces the official address (a mirror; the checksum
    is still the official one). Failures raise CheckpointDownloadError.
    """
    target = checkpoint_path(spec, directory)
    if target.exists() and not force:
        verify_checkpoint_file(spec, target)
        log.info("%s already present and verified", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    source = url or spec.url
    manual = (
        f"download it elsewhere from {spec.url} and place it at {target} "
        f"(SHA-256 {spec.sha256}, {spec.size} bytes)"
    )

    def failure(reason: str) -> CheckpointDownloadError:
        message = f"cannot download {spec.checkpoint} from {source} ({reason}); {manual}"
        return CheckpointDownloadError(message, reason)

    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{spec.checkpoint}.", suffix=".part", dir=target.parent
    )
    try:
        with os.fdopen(fd, "wb") as out:
            response = _open_url(source, connect_timeout_s, timeout_s, failure)
            with response:
                total = int(response.headers.get("Content-Length") or 0) or None
                try:
                    _copy_with_progress(response, out, total, spec.checkpoint, progress)
                except OSError as exc:  # includes socket timeouts and connection resets
                    raise failure(f"transfer interrupted: {exc}") from None
        try:
            verify_checkpoint_file(spec, tmp_name)
        except CheckpointError as exc:
            raise CheckpointDownloadError(
                f"downloaded file rejected: {exc}; {manual}", f"downloaded file rejected: {exc}"
            ) from None
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _open_url(url: str, connect_timeout_s: float, timeout_s: float, failure):
    """`urlopen(url)` whose opening, DNS lookup included, gives up after `connect_timeout_s`.

    The socket timeout (`timeout_s`) bounds every later read. The lookup is not interruptible,
    so the opening runs in a daemon thread that is abandoned when it takes too long.
    """
    outcome: dict = {}
    lock = threading.Lock()

    def attempt() -> None:
        try:
            response = urllib.request.urlopen(url, timeout=timeout_s)
        except Exception as exc:
            outcome["error"] = exc
            return
        with lock:
            if outcome.get("abandoned"):
                response.close()
            else:
                outcome["response"] = response

    thread = threading.Thread(target=attempt, name="checkpoint-download-open", daemon=True)
    thread.start()
    thread.join(connect_timeout_s)
    with lock:
        if not ("response" in outcome or "error" in outcome):
            outcome["abandoned"] = True
            raise failure(f"no connection within {connect_timeout_s:g} s")
    exc = outcome.get("error")
    if exc is None:
        return outcome["response"]
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = str(exc.reason)
    elif isinstance(exc, (OSError, ValueError)):
        reason = str(exc) or type(exc).__name__
    else:
        raise exc
    raise failure(reason)


def _copy_with_progress(src, dst, total: int | None, label: str, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            dst.write(chunk)
            bar.update(len(chunk))


def load_state_dict(path: os.PathLike) -> dict[str, torch.Tensor]:
    """Read the "model" state dict of an official-format checkpoint."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({detail[:200]})"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(
            f"{path} is not in the official SAM 2 format: expected a dict with a 'model' state dict"
        )
    state = payload["model"]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: 'model' entry {bad[0]!r} is not a tensor")
    return state


def _trunk_signature(state: dict[str, torch.Tensor]) -> tuple:
    """(embed dim, number of Hiera blocks, has SAM 2.1 parameters) of a state dict."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    embed = int(patch.shape[0]) if patch is not None else None
    blocks = {
        k.split(".")[3]
        for k in state
        if k.startswith("image_encoder.trunk.blocks.") and len(k.split(".")) > 3
    }
    return embed, len(blocks), "no_obj_embed_spatial" in state


def _config_signature(spec: ModelSpec) -> tuple:
    import sam2

    cfg_file = Path(sam2.__path__[0]) / spec.config
    with open(cfg_file, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)["model"]
    trunk = cfg["image_encoder"]["trunk"]
    return int(trunk["embed_dim"]), sum(trunk["stages"]), bool(cfg.get("no_obj_embed_spatial"))


def guess_model_for(state: dict[str, torch.Tensor]) -> str | None:
    """Name of the configured size whose architecture matches `state`, if any."""
    signature = _trunk_signature(state)
    for name, spec in load_models().items():
        if _config_signature(spec) == signature:
            return name
    return None


def check_state_dict_matches(
    model: torch.nn.Module, state: dict[str, torch.Tensor], spec: ModelSpec, source: str
) -> None:
    """Raise CheckpointError naming what differs when `state` does not fit `model`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[0]})")
    guess = guess_model_for(state)
    hint = f"; it looks like a '{guess}' checkpoint" if guess and guess != spec.name else ""
    raise CheckpointError(
        f"checkpoint {source} does not match config {spec.config} of model "
        f"'{spec.name}': {', '.join(parts)}{hint}"
    )


def build_sam2_model(
    spec: ModelSpec,
    checkpoint: os.PathLike | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> torch.nn.Module:
    """Build the official `SAM2VideoPredictor` (a `SAM2Base`) for `spec` in eval mode.

    Exactly one of `checkpoint` and `random_weights=True` must be given. The model is built with
    the official video-predictor settings (`build_sam2_video_predictor`), which are a superset
    of the image predictor's; `SAM2ImagePredictor(model)` works on the result.
    """
    if (checkpoint is None) == (not random_weights):
        raise CheckpointError(
            "give a checkpoint path, or ask for random weights explicitly"
            if checkpoint is None
            else "a checkpoint and random weights were both requested; choose one"
        )
    state = load_state_dict(checkpoint) if checkpoint is not None else None
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    model = build_sam2_video_predictor(spec.config, ckpt_path=None, device="cpu")
    if state is not None:
        check_state_dict_matches(model, state, spec, str(checkpoint))
        model.load_state_dict(state, strict=True)
    else:
        warnings.warn(RANDOM_WEIGHTS_WARNING, stacklevel=2)
    return model.to(device).eval()


def write_checkpoint(model: torch.nn.Module, path: os.PathLike) -> Path:
    """Save `model` in the official checkpoint format ({"model": state_dict})."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return path


# Random weights put every object at "absent" (object-score logits < 0); raising the
# object-score head's bias by this much makes prompted objects present, as with trained weights.
OBJECT_SCORE_BIAS_SHIFT = 10.0


def write_random_checkpoint(spec: ModelSpec, path: os.PathLike, seed: int = 0) -> Path:
    """An official-format checkpoint of random weights for tests and speed runs (warns, as any
    random-weights model does): every parameter perturbed (so zero biases and unit norms cannot
    hide a mistake), the object-score head's bias raised by OBJECT_SCORE_BIAS_SHIFT."""
    import torch

    model: Any = build_sam2_model(spec, random_weights=True, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)
        head = model.sam_mask_decoder.pred_obj_score_head
        (head.layers[-1] if hasattr(head, "layers") else head).bias.add_(OBJECT_SCORE_BIAS_SHIFT)
    return write_checkpoint(model, path)


@dataclass(frozen=True)
class ResolvedWeights:
    """The weights an export uses: a checkpoint file (`path`), or random weights and why."""

    spec: ModelSpec
    path: Path | None = None  # None: random weights
    sha256: str | None = None  # of `path`
    downloaded: bool = False  # `path` was downloaded just now
    random_reason: str | None = None  # why random weights are used
    seed: int = 0  # of random weights

    @property
    def random(self) -> bool:
        return self.path is None

    @property
    def official(self) -> bool:
        return self.sha256 == self.spec.sha256

    def describe(self) -> str:
        """One line that says plainly which weights these are."""
        if self.random:
            return f"weights: RANDOM ({self.random_reason}) - masks are meaningless"
        if self.official:
            how = "downloaded, sha256 verified" if self.downloaded else "sha256 verified"
            return f"weights: official checkpoint {self.path} ({how})"
        return (
            f"weights: {self.path} (not the official {self.spec.checkpoint}: "
            f"SHA-256 {self.sha256}; exported as given)"
        )

    def metadata(self) -> dict:
        """The `model.checkpoint` entry of metadata.json."""
        if self.path is None:
            return {"random_weights": True, "seed": self.seed, "reason": self.random_reason}
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "official": self.official,
            "random_weights": False,
        }

    def build_model(self) -> torch.nn.Module:
        """`build_sam2_model` with these weights (random ones without a second warning)."""
        if not self.random:
            return build_sam2_model(self.spec, checkpoint=self.path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build_sam2_model(self.spec, random_weights=True, seed=self.seed)


def resolve_weights(
    spec: ModelSpec,
    *,
    checkpoint: os.PathLike | None = None,
    directory: os.PathLike | None = None,
    random_weights: bool = False,
    download_if_missing: bool = False,
    random_if_missing: bool = False,
    url: str | None = None,
    connect_timeout_s: float = DOWNLOAD_CONNECT_TIMEOUT_S,
    seed: int = 0,
    progress: bool = True,
) -> ResolvedWeights:
    """Decide which weights to export, downloading the official checkpoint when asked.

    The rules, in order:
    * `random_weights`: random weights.
    * `checkpoint` (an explicit file): that file as given, official or not.
    * `<directory>/<official name>` present: used. With `download_if_missing` it must be the
      official file (size and SHA-256): a file that differs is refused with CheckpointError,
      never replaced or skipped, since it is someone's file and may be a damaged download.
    * missing, `download_if_missing`: downloaded (checksum verified, written atomically); a
      failed or rejected download falls back to random weights if `random_if_missing`, else
      raises CheckpointDownloadError.
    * missing: random weights if `random_if_missing`, else CheckpointError saying what to do.
    """
    if random_weights:
        return ResolvedWeights(spec, random_reason="requested", seed=seed)
    explicit = checkpoint is not None
    path = Path(checkpoint) if checkpoint is not None else checkpoint_path(spec, directory)
    if explicit and download_if_missing:
        raise CheckpointError(
            "downloading fetches the official file into the checkpoint directory; "
            "it does not apply to an explicit checkpoint file"
        )
    if path.exists():
        if not download_if_missing:
            return ResolvedWeights(spec, path, sha256_file(path))
        try:
            verify_checkpoint_file(spec, path)
        except CheckpointError as exc:
            raise CheckpointError(
                f"refusing {path}: it is not the official {spec.checkpoint} ({exc}); delete it "
                f"to download the official file again, or export it as your own weights with "
                f"--checkpoint {path}"
            ) from None
        return ResolvedWeights(spec, path, spec.sha256)
    if download_if_missing:
        try:
            downloaded = download_checkpoint(
                spec, directory, url=url, connect_timeout_s=connect_timeout_s, progress=progress
            )
        except CheckpointDownloadError as exc:
            if not random_if_missing:
                raise
            log.warning("%s", exc)
            return ResolvedWeights(spec, random_reason=f"download failed: {exc.reason}", seed=seed)
        return ResolvedWeights(spec, downloaded, spec.sha256, downloaded=True)
    if random_if_missing and not explicit:
        return ResolvedWeights(spec, random_reason=f"{path} not found", seed=seed)
    raise CheckpointError(
        f"checkpoint {path} not found: "
        f"run `sam2-triton download --model {spec.name}`, "
        f"or place the file from {spec.url} there (SHA-256 {spec.sha256}), or pass "
        "--random-weights to export meaningless weights"
    )

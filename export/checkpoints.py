"""Official SAM 2 checkpoints: download with checksum verification, load, and build the model.

The official format is a `torch.save` dict whose "model" entry is the `SAM2Base` state dict.
Loading mirrors `sam2.build_sam._load_checkpoint` (CPU map, `weights_only=True`, strict keys) but
reports problems as one clear `CheckpointError` instead of a bare `RuntimeError`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import torch
import yaml

from sam2_triton.configs import ModelSpec, load_models
from sam2_triton.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINT_DIR_ENV = "SAM2_TRITON_CHECKPOINTS"
DEFAULT_CHECKPOINT_DIR = Path("checkpoints")
_CHUNK = 1 << 20

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


def verify_checkpoint_file(spec: ModelSpec, path: os.PathLike) -> None:
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


def download_checkpoint(
    spec: ModelSpec,
    directory: os.PathLike | None = None,
    *,
    url: str | None = None,
    force: bool = False,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the official checkpoint of `spec` into `directory` and verify its checksum.

    An existing file that passes verification is kept. The download goes to a temporary file
    that replaces the target only after its size and SHA-256 match `configs/models.yaml`.
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.checkpoint}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(source, timeout=timeout_s)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise CheckpointError(
                    f"cannot download {spec.checkpoint} from {source} ({reason}); {manual}"
                ) from None
            with response:
                total = int(response.headers.get("Content-Length") or 0) or None
                _copy_with_progress(response, out, total, spec.checkpoint, progress)
        try:
            verify_checkpoint_file(spec, tmp_name)
        except CheckpointError as exc:
            raise CheckpointError(f"downloaded file rejected: {exc}; {manual}") from None
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _copy_with_progress(src, dst, total: int | None, label: str, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            dst.write(chunk)
            bar.update(len(chunk))


def load_state_dict(path: os.PathLike) -> dict[str, torch.Tensor]:
    """Read the "model" state dict of an official-format checkpoint."""
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return path

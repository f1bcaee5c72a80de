"""Reading and writing backbone checkpoints in explicitly named formats.

Formats (never guessed from the keys a file happens to hold):

- ``lightly_graft``: this package's own file, ``{"format": "lightly_graft",
  "version": 1, "backbone": {"name", "kwargs"}, "state_dict": {timm names}}``.
- ``lightning``: a Lightning checkpoint of a zoo method; the online encoder is
  ``state_dict["backbone.vit.*"]`` and the architecture is in
  ``hyper_parameters["backbone"]``.
- ``mae``: facebookresearch/mae's ``{"model": state_dict}`` in timm names: the
  released encoder-only ``mae_pretrain_vit_*.pth``, or a training checkpoint
  ``checkpoint-N.pth`` of ``util/misc.py:save_model``, ``{"model", "optimizer",
  "epoch", "scaler", "args"}``, whose ``model`` also holds the decoder
  (``mask_token``, ``decoder_*``: skipped).
- ``moco_v3``: facebookresearch/moco-v3's ``main_moco.py`` checkpoint,
  ``{"epoch", "arch", "state_dict", "optimizer", "scaler"}``; the encoder is
  ``state_dict["module.base_encoder.*"]`` in timm names, whose ``head.*`` is the
  projector (skipped, as ``convert_to_deit.py`` drops it); the momentum encoder
  and the predictor are skipped too.
- ``timm``: a plain timm state dict (a run's ``backbone.pt``; the architecture is
  in ``backbone.json`` beside it).

Everything is read with ``torch.load(weights_only=True)``, which rebuilds only
tensors, plain containers and the types in ``SAFE_GLOBALS``; a pickle that would
call anything else (and so could run code) is refused with an
:class:`~lightly_graft.errors.UnsafeCheckpointError`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from lightly_graft.errors import (
    CheckpointError,
    UnsafeCheckpointError,
    did_you_mean,
    format_options,
)
from lightly_graft.files import save_atomic, write_atomic
from lightly_graft.modules.backbone import BackboneSpec, build_vit
from lightly_graft.training.state_fit import check_state_fits

FORMATS = ("lightly_graft", "lightning", "mae", "moco_v3", "timm")
LIGHTNING_ENCODER_PREFIX = "backbone.vit."
MOCO_V3_ENCODER_PREFIX = "module.base_encoder."
#: The classes, beyond tensors and plain containers, that the checkpoints of the
#: named formats hold, and the only ones a load rebuilds: facebookresearch/mae's
#: training checkpoints store the run's ``argparse.Namespace`` as ``args``
#: (rebuilding one sets attributes; it calls nothing).
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
SPEC_FILE = "backbone.json"
# Keys of a timm/MAE file that are not part of the encoder: classifier heads and
# MAE's decoder. They are reported as skipped, never loaded.
_NON_ENCODER_PREFIXES = ("head.", "fc_norm.", "decoder", "mask_token")


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise CheckpointError(
            f"Unknown checkpoint format '{format}'{did_you_mean(format, FORMATS)}; "
            f"valid formats: {format_options(FORMATS)}."
        )
    return format


def file_problem(path: str | Path) -> str | None:
    """Why a checkpoint file cannot be read at all, or None."""
    file = Path(path).expanduser()
    if not file.exists():
        return f"'{path}' does not exist: give the path of a checkpoint file"
    if not file.is_file():
        return f"'{path}' is a directory, not a checkpoint file"
    if not os.access(file, os.R_OK):
        return f"'{path}' is not readable (permissions): chmod +r it or copy it"
    if file.stat().st_size == 0:
        return f"'{path}' is empty (0 bytes): the download or save was interrupted"
    return None


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)``, allowing
    ``SAFE_GLOBALS``, with clear errors.

    Raises:
        UnsafeCheckpointError: The file pickles a class or function that a
            weights-only load does not rebuild (loading it could run code).
        CheckpointError: The file is missing (:func:`file_problem`) or not a
            readable PyTorch file.
    """
    problem = file_problem(path)
    if problem is not None:
        raise CheckpointError(f"Checkpoint {problem}")
    path = Path(path).expanduser()
    try:
        with _safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _REFUSED_GLOBAL.search(str(error))
        if refused is None:
            raise _unreadable(path, error) from None
        allowed = ", ".join(f"{t.__module__}.{t.__qualname__}" for t in SAFE_GLOBALS)
        raise UnsafeCheckpointError(
            f"Checkpoint '{path}' pickles '{refused.group(1)}', which a "
            "weights-only load refuses: unpickling it could run code. Only "
            f"tensors, plain containers and {allowed} are read. If you trust "
            "the file, load it yourself with torch.load(..., weights_only=False), "
            "save its weights alone with torch.save(state_dict, 'weights.pt') and "
            "pass that file as format 'timm'."
        ) from None
    except Exception as error:  # torch raises many types for unreadable files
        raise _unreadable(path, error) from None


@contextlib.contextmanager
def _safe_globals() -> Iterator[None]:
    allow = getattr(torch.serialization, "safe_globals", None)
    if allow is None:  # torch 2.4 has only the process-wide allow-list
        torch.serialization.add_safe_globals(list(SAFE_GLOBALS))
        yield
        return
    with allow(list(SAFE_GLOBALS)):
        yield


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return CheckpointError(
        f"Checkpoint '{path}' cannot be read as a PyTorch file with "
        f"weights_only=True ({type(error).__name__}: {first_line}). Is it a "
        "complete .pt/.pth/.ckpt file?"
    )


def _keys_preview(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:6]
        return f"a dict with keys {keys}{' ...' if len(obj) > 6 else ''}"
    return f"a {type(obj).__name__}"


def _format_hint(obj: Any) -> str:
    """Names the format a file looks like, as a hint in an error; the format
    used is always the one the user named."""
    if not isinstance(obj, Mapping):
        return ""
    if obj.get("format") == "lightly_graft":
        return " It looks like a 'lightly_graft' file."
    state = obj.get("state_dict")
    if isinstance(state, Mapping) and any(
        str(k).startswith(MOCO_V3_ENCODER_PREFIX) for k in state
    ):
        return " It looks like a 'moco_v3' checkpoint."
    if "pytorch-lightning_version" in obj or "state_dict" in obj:
        return " It looks like a 'lightning' checkpoint."
    if "model" in obj:
        return " It looks like a 'mae' checkpoint."
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        return " It looks like a plain 'timm' state dict."
    return ""


def _wrong_format(path: Path, format: str, obj: Any, expected: str) -> CheckpointError:
    return CheckpointError(
        f"'{path}' is not a '{format}' checkpoint: {expected}, but it is "
        f"{_keys_preview(obj)}.{_format_hint(obj)} Pass the format that matches "
        "the file (--format / format=)."
    )


def split_encoder_state(
    state: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """Splits a timm-named state into encoder keys and skipped (head/decoder) keys."""
    encoder = {
        k: v for k, v in state.items() if not k.startswith(_NON_ENCODER_PREFIXES)
    }
    skipped = [k for k in state if k.startswith(_NON_ENCODER_PREFIXES)]
    return encoder, skipped


def load_encoder_state(
    path: str | Path, format: str
) -> tuple[dict[str, Tensor], dict[str, Any] | None, list[str]]:
    """Reads the encoder weights of a checkpoint, in timm names.

    Returns:
        ``(state, spec, skipped)``: the timm-named encoder state dict, the
        backbone spec dict stored in the file (``lightly_graft``, ``lightning``)
        or None, and the keys of the file that are not encoder weights.

    Raises:
        CheckpointError: missing or unreadable file, or not of the named format.
    """
    check_format(format)
    path = Path(path)
    obj = read_checkpoint(path)
    spec: dict[str, Any] | None = None
    if format == "lightly_graft":
        if not (isinstance(obj, Mapping) and obj.get("format") == "lightly_graft"):
            raise _wrong_format(
                path, format, obj, "it should hold format='lightly_graft'"
            )
        state, spec = dict(obj["state_dict"]), dict(obj["backbone"])
    elif format == "lightning":
        if not (
            isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)
        ):
            raise _wrong_format(path, format, obj, "it should hold 'state_dict'")
        full = obj["state_dict"]
        state = {
            k[len(LIGHTNING_ENCODER_PREFIX) :]: v
            for k, v in full.items()
            if k.startswith(LIGHTNING_ENCODER_PREFIX)
        }
        if not state:
            raise CheckpointError(
                f"Lightning checkpoint '{path}' has no '{LIGHTNING_ENCODER_PREFIX}*' "
                "weights: it is not a checkpoint of a lightly-graft zoo method."
            )
        hparams = obj.get("hyper_parameters") or {}
        spec = (
            dict(hparams["backbone"])
            if isinstance(hparams.get("backbone"), Mapping)
            else None
        )
    elif format == "mae":
        if not (isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping)):
            raise _wrong_format(path, format, obj, "it should hold 'model'")
        state = dict(obj["model"])
    elif format == "moco_v3":
        return _moco_v3_encoder(path, obj)
    else:
        if not (
            isinstance(obj, Mapping)
            and obj
            and all(isinstance(v, Tensor) for v in obj.values())
        ):
            raise _wrong_format(
                path, format, obj, "it should map parameter names to tensors"
            )
        state = dict(obj)
    state, skipped = split_encoder_state(state)
    check_finite_state(path, state)
    return state, spec, skipped


def check_finite_state(path: str | Path, state: Mapping[str, Tensor]) -> None:
    """Raises a :class:`CheckpointError` if any weight is NaN or infinite: such
    a file comes from a diverged run and gives meaningless results."""
    bad = total = 0
    for value in state.values():
        if isinstance(value, Tensor) and value.is_floating_point():
            bad += int((~torch.isfinite(value)).sum())
            total += value.numel()
    if bad:
        raise CheckpointError(
            f"'{path}' holds non-finite weights ({bad} of {total} values are "
            "NaN/inf): the run that wrote it diverged; retrain it with a lower "
            "learning rate, another precision or gradient clipping"
        )


def _moco_v3_encoder(path: Path, obj: Any) -> tuple[dict[str, Tensor], None, list[str]]:
    """The base encoder of a moco-v3 ``main_moco.py`` checkpoint, as
    ``load_encoder_state`` returns it (skipped keys in the file's names)."""
    if not (isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)):
        raise _wrong_format(
            path, "moco_v3", obj, "it should hold 'state_dict' (main_moco.py's layout)"
        )
    full = obj["state_dict"]
    prefix = MOCO_V3_ENCODER_PREFIX
    encoder = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
    if not encoder:
        prefixes = sorted({".".join(str(k).split(".")[:2]) for k in full})[:6]
        raise CheckpointError(
            f"MoCo v3 checkpoint '{path}' has no '{prefix}*' weights (its "
            f"state_dict keys start with {prefixes}): main_moco.py saves the "
            "DistributedDataParallel model, whose online encoder is "
            f"'{prefix}*'. Pass the format that matches the file."
        )
    state, heads = split_encoder_state(encoder)
    skipped = [prefix + k for k in heads] + [
        k for k in full if not k.startswith(prefix)
    ]
    return state, None, skipped


def resolve_spec(
    path: str | Path,
    stored: Mapping[str, Any] | None,
    spec: BackboneSpec | Mapping[str, Any] | str | None,
) -> BackboneSpec:
    """The architecture of a checkpoint: the given ``spec``, else the one stored
    in the file, else ``backbone.json`` beside it."""
    if spec is not None:
        return BackboneSpec.coerce(spec)
    if stored is not None:
        return BackboneSpec.coerce(stored)
    sidecar = Path(path).with_name(SPEC_FILE)
    if sidecar.is_file():
        try:
            return BackboneSpec.coerce(json.loads(sidecar.read_text()))
        except (json.JSONDecodeError, ValueError) as error:
            raise CheckpointError(
                f"'{sidecar}' is not a valid backbone spec: {error}"
            ) from None
    raise CheckpointError(
        f"The architecture of '{path}' is unknown: the file does not store it and "
        f"there is no '{SPEC_FILE}' beside it. Give the timm model name and "
        "overrides (e.g. --model vit_base_patch16_224)."
    )


def load_backbone(
    path: str | Path,
    format: str,
    spec: BackboneSpec | Mapping[str, Any] | str | None = None,
) -> tuple[VisionTransformer, BackboneSpec]:
    """Builds the timm ViT of a checkpoint and loads its encoder weights (all
    keys, all shapes checked).

    Raises:
        CheckpointError: if the file is missing/unreadable/of another format, or
            the weights do not fit the architecture (names the keys and shapes).
    """
    state, stored, _ = load_encoder_state(path, format)
    spec = resolve_spec(path, stored, spec)
    vit = build_vit(spec)
    check_state_fits(vit.state_dict(), state, str(path))
    vit.load_state_dict(state, strict=True)
    return vit, spec


def _cpu_state(vit: VisionTransformer) -> dict[str, Tensor]:
    """A detached CPU copy of the ViT's weights, to be saved."""
    return {k: v.detach().cpu().clone() for k, v in vit.state_dict().items()}


def save_backbone(path: str | Path, vit: VisionTransformer, spec: BackboneSpec) -> Path:
    """Writes the ``lightly_graft`` format (weights + architecture)."""
    saved = {
        "format": "lightly_graft",
        "version": 1,
        "backbone": spec.to_dict(),
        "state_dict": _cpu_state(vit),
    }
    return save_atomic(saved, path)  # (it creates the parent folder)


def export_timm(path: str | Path, vit: VisionTransformer, spec: BackboneSpec) -> Path:
    """Writes a plain timm state dict (``timm`` format) and ``backbone.json``
    beside it. ``timm.create_model(name, pretrained=False, num_classes=0,
    **kwargs).load_state_dict(torch.load(path))`` loads it."""
    path = save_atomic(_cpu_state(vit), path)
    write_atomic(path.with_name(SPEC_FILE), json.dumps(spec.to_dict(), indent=2) + "\n")
    return path

"""Load one checkpoint through the standard `from_pretrained(repo_or_path, revision=...)` path."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from harness.arch import arch_of
from harness.engine import ATTN_IMPL
from harness.errors import HarnessError

hf_logging.disable_progress_bar()  # one bar per revision from Lightning is enough

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(HarnessError, RuntimeError):
    pass


def devices() -> list[str]:
    """The devices this machine has, as runner.device spells them."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def target_device(requested: str) -> str:
    """Where the weights should land: Lightning accelerator names -> a torch device. A device this machine
    does not have is refused here, before any checkpoint is loaded (torch would say "Torch not compiled with
    CUDA enabled" from inside from_pretrained)."""
    requested = str(requested)
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    want = "cuda" if requested == "gpu" else requested
    if want not in devices():
        why = {"mps": "MPS needs Apple silicon and macOS"}.get(want, "no CUDA device is visible" if
              torch.version.cuda else f"this torch ({torch.__version__}) is built without CUDA")
        raise CheckpointError(f"runner.device={requested}: {why}; devices here: {', '.join(devices())} "
                              f"(or runner.device=auto)")
    return want


def _weights(folder) -> str:
    """The weight files of a checkpoint folder, named in errors (a corrupt one is usually a partial download)."""
    files = sorted(Path(folder).glob("*.safetensors")) or sorted(Path(folder).glob("pytorch_model*.bin"))
    return ", ".join(map(str, files)) if files else str(folder)


def _refetch(resolved) -> str:
    if resolved.hub_revision is None:  # a local folder: only its owner can rewrite it
        return "re-save that checkpoint (save_pretrained) or remove the folder"
    return (f"download it again: hf download {resolved.source} --revision {resolved.hub_revision} "
            "--force-download")


def load(resolved, dtype: str, model_name: str, device: str = "cpu"):
    """safetensors weights straight into `dtype` on `device` (no float32 or CPU copy first), capture attention on."""
    if dtype not in DTYPES:
        raise CheckpointError(f"unknown runner.dtype '{dtype}' (valid: {', '.join(DTYPES)})")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.source, revision=resolved.hub_revision, dtype=DTYPES[dtype],
            attn_implementation=ATTN_IMPL, device_map=device if device != "cpu" else None,
            # the files are already here (checkpoints.resolve): asking the hub again only prints
            # "Could not reach the Hub ... Using cached commit hash" per file when it is unreachable
            local_files_only=getattr(resolved, "local_only", False),
        )
    except Exception as e:  # corrupt or partial files surface as many exception types
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load {model_name} revision {resolved.name} from {_weights(resolved.path)}: "
                              f"{msg}; {_refetch(resolved)}") from e
    arch_of(model.config)  # unsupported architectures fail here, with the valid choices
    return model.eval()

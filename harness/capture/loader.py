"""Load one checkpoint through the standard `from_pretrained(repo_or_path, revision=...)` path."""
from __future__ import annotations

import contextlib

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from harness.capture.arch import arch_of
from harness.capture.engine import ATTN_IMPL
from harness.common.errors import HarnessError
from harness.sources.folders import weight_files

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(HarnessError, RuntimeError):
    pass


def _weights(folder) -> str:
    """The weight files of a checkpoint folder, named in errors (a corrupt one is usually a partial download)."""
    files = weight_files(folder)
    return ", ".join(map(str, files)) if files else str(folder)


def _refetch(resolved) -> str:
    if resolved.hub_revision is None:  # a local folder: only its owner can rewrite it
        return "re-save that checkpoint (save_pretrained) or remove the folder"
    return (f"download it again: hf download {resolved.source} --revision {resolved.hub_revision} "
            "--force-download")


@contextlib.contextmanager
def _no_hf_progress_bars():
    """transformers' per-file loading bars off while a checkpoint loads (the job shows one bar over its
    revisions), and back on afterwards if they were on: nothing changes in the user's process at import."""
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load(resolved, dtype: str, model_name: str, device: str = "cpu"):
    """safetensors weights straight into `dtype` on `device` (no float32 or CPU copy first), capture attention on."""
    if dtype not in DTYPES:
        raise CheckpointError(f"unknown runner.dtype '{dtype}' (valid: {', '.join(DTYPES)})")
    try:
        with _no_hf_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(
                resolved.source, revision=resolved.hub_revision, dtype=DTYPES[dtype],
                attn_implementation=ATTN_IMPL, device_map=device if device != "cpu" else None,
                # the files are already here (checkpoints.resolve): asking the hub again only prints
                # "Could not reach the Hub ... Using cached commit hash" per file when it is unreachable
                local_files_only=getattr(resolved, "local_only", False),
            )
    except (torch.OutOfMemoryError, MemoryError):
        raise CheckpointError(f"out of memory loading {model_name} revision {resolved.name} in {dtype} on {device}: "
                              "free memory, use runner.dtype=bfloat16, or a device with more memory") from None
    except ImportError as e:  # e.g. a tokenizer or quantisation backend the checkpoint's config asks for
        raise CheckpointError(f"cannot load {model_name} revision {resolved.name}: missing package "
                              f"{e.name or e} (pip install {e.name or '<it>'})") from None
    except PermissionError as e:
        raise CheckpointError(f"cannot load {model_name} revision {resolved.name}: no permission to read "
                              f"{e.filename or resolved.path}") from None
    except Exception as e:  # noqa: BLE001 - corrupt or partial files surface as many exception types
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load {model_name} revision {resolved.name} from {_weights(resolved.path)}: "
                              f"{msg}; {_refetch(resolved)}") from e
    arch_of(model.config)  # unsupported architectures fail here, with the valid choices
    return model.eval()

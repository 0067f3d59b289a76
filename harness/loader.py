"""Load one checkpoint through the standard `from_pretrained(repo_or_path, revision=...)` path."""
from __future__ import annotations

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


def target_device(requested: str) -> str:
    """Where the weights should land: Lightning accelerator names -> a torch device."""
    if requested in ("gpu", "cuda") or (requested == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def load(resolved, dtype: str, model_name: str, device: str = "cpu"):
    """safetensors weights straight into `dtype` on `device` (no float32 or CPU copy first), capture attention on."""
    if dtype not in DTYPES:
        raise CheckpointError(f"unknown runner.dtype '{dtype}' (valid: {', '.join(DTYPES)})")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.source, revision=resolved.hub_revision, dtype=DTYPES[dtype],
            attn_implementation=ATTN_IMPL, device_map=device if device != "cpu" else None,
        )
    except Exception as e:  # corrupt or partial files surface as many exception types
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load {model_name} revision {resolved.name} from {resolved.path}: {msg}") from e
    arch_of(model.config)  # unsupported architectures fail here, with the valid choices
    return model.eval()

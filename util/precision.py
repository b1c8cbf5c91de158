"""Mixed precision (`--amp`) for training, evaluation and inference alike."""
from contextlib import nullcontext

import torch


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA when `enabled` (`--amp`); no-op otherwise."""
    if enabled and device.type == 'cuda':
        return torch.autocast(device_type='cuda', dtype=torch.bfloat16)
    return nullcontext()


def to_float32(outputs):
    """Model outputs (tensors, or dicts and lists of them) in float32, e.g. so that the losses are computed
    in full precision."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {k: to_float32(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [to_float32(v) for v in outputs]
    return outputs

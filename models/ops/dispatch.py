"""Chooses between the CUDA extension and the PyTorch implementation of deformable attention."""
from torch import Tensor


def cuda_extension_verified(device) -> bool:
    """True when the compiled extension is importable and agrees with PyTorch on `device`."""
    return False


def ms_deform_attn_cuda(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                        sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    raise RuntimeError('the CUDA extension of multi-scale deformable attention is not built')

"""`ms_deform_attn`: multi-scale deformable attention by the CUDA extension where it is built and
passed its first-use check on the device (`verification.py`), else by the PyTorch gather."""
from typing import Optional

from torch import Tensor

from . import extension, verification
from .functions import Shapes, level_shapes, ms_deform_attn_gather


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
                   attention_weights: Tensor, shapes: Optional[Shapes] = None) -> Tensor:
    """`ms_deform_attn_pytorch`, computed by the CUDA extension where it is verified for the
    device, else by `ms_deform_attn_gather`. `shapes`: `spatial_shapes` as Python ints, which
    spares reading the tensor back from the device."""
    if verification.cuda_extension_verified(value.device):
        return extension.ms_deform_attn_cuda(value, spatial_shapes, level_start_index,
                                             sampling_locations, attention_weights)
    return ms_deform_attn_gather(value, level_shapes(spatial_shapes if shapes is None else shapes),
                                 sampling_locations, attention_weights)

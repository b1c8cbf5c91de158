"""The compiled CUDA extension of deformable attention (`models.ops._C`, built by
`cd models/ops && python setup.py build_ext --inplace`): lazy loading and the autograd function.

Dtypes: the extension computes in float32 (float64 for float64 value); `ms_deform_attn_cuda`
keeps value in its dtype (float16 / bfloat16 under autocast, from the value projection) and runs
sampling locations and attention weights in that arithmetic dtype, so locations never lose
precision to a half type. The output has value's dtype.
"""
import functools
import importlib
from types import ModuleType
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

BUILD_COMMAND = '`cd models/ops && python setup.py build_ext --inplace`'


@functools.lru_cache(maxsize=None)
def load_extension() -> Tuple[Optional[ModuleType], str]:
    """`(models.ops._C, '')`, or `(None, why it is unavailable)`."""
    name = f'{__package__}._C'
    try:
        return importlib.import_module(name), ''
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        return None, f'extension not built: run {BUILD_COMMAND}'
    except ImportError as error:
        return None, f'extension failed to load ({error}): rebuild it with {BUILD_COMMAND}'


class _MSDeformAttnFunction(torch.autograd.Function):
    """Autograd for the extension: its backward returns all three input gradients at once."""

    @staticmethod
    def forward(ctx, value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        extension, _ = load_extension()
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights)
        return extension.forward(value, spatial_shapes, level_start_index, sampling_locations,
                                 attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        extension, _ = load_extension()
        grad_value, grad_locations, grad_weights = extension.backward(*ctx.saved_tensors,
                                                                      grad_output.contiguous())
        return grad_value, None, None, grad_locations, grad_weights


def ms_deform_attn_cuda(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                        sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """`ms_deform_attn_pytorch` by the extension; value `[N, S, M, D]` in float32/64/16 or
    bfloat16, locations `[N, Lq, M, L, P, 2]` and weights `[N, Lq, M, L, P]` of any float dtype
    (computed in float64 for float64 value, else float32) -> `[N, Lq, M*D]` in value's dtype."""
    coordinate_dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
    return _MSDeformAttnFunction.apply(value.contiguous(), spatial_shapes.contiguous(),
                                       level_start_index.contiguous(),
                                       sampling_locations.to(coordinate_dtype).contiguous(),
                                       attention_weights.to(coordinate_dtype).contiguous())

"""First-use verification of the CUDA extension: on first use per device it is run on a small random
problem against `ms_deform_attn_pytorch` (output and the three gradients); a mismatch, or an error such
as a missing kernel image for the GPU, makes that device use the PyTorch implementation for good.
Either way one line on the `models.ops` logger says which implementation is active.
"""
import logging
import warnings
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import extension
from .functions import ms_deform_attn_pytorch

logger = logging.getLogger('models.ops')

EXTENSION_DEVICE_TYPES = ('cuda',)
VERIFICATION_TOLERANCE = 1e-4

_device_verdicts: Dict[torch.device, bool] = {}


class Problem(NamedTuple):
    """The arguments of `ms_deform_attn_pytorch`, in order."""
    value: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    sampling_locations: Tensor
    attention_weights: Tensor

    def to(self, device: Union[torch.device, str], value_dtype: torch.dtype,
           coordinate_dtype: torch.dtype) -> 'Problem':
        """Value in `value_dtype`, sampling locations and attention weights in `coordinate_dtype`."""
        return Problem(self.value.to(device, value_dtype), self.spatial_shapes.to(device),
                       self.level_start_index.to(device),
                       self.sampling_locations.to(device, coordinate_dtype),
                       self.attention_weights.to(device, coordinate_dtype))


def random_problem(shapes: Sequence[Tuple[int, int]], batch: int, queries: int, heads: int,
                   channels: int, points: int, generator: torch.Generator) -> Problem:
    """A float64 CPU problem with levels of `shapes` (h, w).

    Sampling points land up to two pixels outside each map, and at least 0.05 pixel away from the
    lines through pixel centres, where the gradient of bilinear sampling jumps: implementations
    that round coordinates slightly differently then still agree on the gradients.
    """
    areas = [h * w for h, w in shapes]
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64).reshape(-1, 2)
    level_start_index = torch.tensor([0] + areas[:-1], dtype=torch.int64).cumsum(0)
    value = torch.randn(batch, sum(areas), heads, channels, dtype=torch.float64, generator=generator)
    point_shape = (batch, queries, heads, len(shapes), points)
    sizes_xy = spatial_shapes.flip(-1)[:, None, :].to(torch.float64)  # [L, 1, 2] against [..., L, P, 2]
    cells = torch.rand(*point_shape, 2, dtype=torch.float64, generator=generator) * (sizes_xy + 3) - 2
    within_cells = 0.05 + 0.9 * torch.rand(*point_shape, 2, dtype=torch.float64, generator=generator)
    pixels = cells.floor() + within_cells
    sampling_locations = (pixels + 0.5) / sizes_xy
    attention_weights = torch.rand(*point_shape, dtype=torch.float64, generator=generator)
    return Problem(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def _output_and_gradients(implementation: Callable[..., Tensor], problem: Problem,
                          grad_output: Tensor) -> List[Tensor]:
    """[output, grad of value, of sampling_locations, of attention_weights] of `implementation`."""
    value, locations, weights = (tensor.detach().requires_grad_() for tensor in
                                 (problem.value, problem.sampling_locations, problem.attention_weights))
    output = implementation(value, problem.spatial_shapes, problem.level_start_index, locations, weights)
    return [output.detach(), *torch.autograd.grad(output, (value, locations, weights), grad_output)]


def errors_against_pytorch(implementation: Callable[..., Tensor], problem: Problem,
                           grad_output: Tensor) -> Dict[str, float]:
    """Max error of the output and each gradient, relative to the largest reference magnitude.

    The reference is `ms_deform_attn_pytorch` in float64 on the same (already rounded) inputs.
    """
    results = _output_and_gradients(implementation, problem, grad_output)
    reference_problem = problem.to(problem.value.device, torch.float64, torch.float64)
    references = _output_and_gradients(ms_deform_attn_pytorch, reference_problem, grad_output.double())
    names = ('output', 'grad_value', 'grad_sampling_locations', 'grad_attention_weights')
    return {name: ((result.double() - reference).abs().max()
                   / reference.abs().max().clamp_min(1e-12)).item()
            for name, result, reference in zip(names, results, references)}


def _extension_failure(device: torch.device) -> Optional[str]:
    """None when the extension agrees with the PyTorch implementation on `device`, else why not."""
    generator = torch.Generator().manual_seed(0)
    problem = random_problem([(6, 9), (3, 4)], batch=2, queries=5, heads=2, channels=40, points=3,
                             generator=generator)
    grad_output = torch.randn(2, 5, 2 * 40, generator=generator)
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            errors = errors_against_pytorch(extension.ms_deform_attn_cuda,
                                            problem.to(device, torch.float32, torch.float32),
                                            grad_output.to(device))
    except RuntimeError as error:
        return f'it raised "{error}"'
    worst = max(errors, key=errors.get)
    if not errors[worst] <= VERIFICATION_TOLERANCE:
        return f'max error {errors[worst]:.3g} in {worst}, tolerance {VERIFICATION_TOLERANCE:g}'
    return None


def _choose_implementation(device: torch.device) -> bool:
    """Whether `device` should run the extension; logs the choice, warns on a failed check."""
    if device.type not in EXTENSION_DEVICE_TYPES:
        logger.info('deformable attention: PyTorch implementation (%s tensors)', device.type)
        return False
    loaded, unavailable = extension.load_extension()
    if loaded is None:
        logger.info('deformable attention: PyTorch implementation (%s)', unavailable)
        return False
    failure = _extension_failure(device)
    if failure is not None:
        warnings.warn(f'the CUDA extension of deformable attention disagrees with the PyTorch '
                      f'implementation on {device} ({failure}); using the PyTorch implementation '
                      f'there. Rebuild it with {extension.BUILD_COMMAND}, or run '
                      f'`python -m models.ops.selftest`.')
        logger.info('deformable attention: PyTorch implementation (CUDA extension failed its check '
                    'on %s)', device)
        return False
    logger.info('deformable attention: CUDA extension (verified on %s)', device)
    return True


def cuda_extension_verified(device: Union[torch.device, str]) -> bool:
    """True when the compiled extension is importable and agrees with PyTorch on `device`.

    Decided once per device (the check synchronises); later calls are a dictionary lookup.
    """
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    verdict = _device_verdicts.get(device)
    if verdict is None:
        verdict = _device_verdicts[device] = _choose_implementation(device)
    return verdict

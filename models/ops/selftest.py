"""Checks the CUDA extension of deformable attention against the PyTorch implementation on a GPU.

    python -m models.ops.selftest

For several problem shapes and every supported dtype, compares the output and the gradients of
value, sampling locations and attention weights with `ms_deform_attn_pytorch` in float64 on the
same rounded inputs (errors relative to the largest reference magnitude); then gradchecks the
extension in float64 and compares both under float16 autocast. Prints a table.

Exit code: 0 when everything passed, or when there is no CUDA device (nothing to check: it says
so and skips); 1 when a check failed or the extension is not built / does not load.
"""
import sys
from typing import List, NamedTuple, Sequence, Tuple

import torch

from .extension import load_extension, ms_deform_attn_cuda
from .functions import ms_deform_attn_pytorch
from .verification import Problem, errors_against_pytorch, random_problem

TOLERANCES = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
AUTOCAST_TOLERANCE = 1e-2


class Case(NamedTuple):
    """A problem of the self-test: level shapes (h, w) and the sizes N, Lq, M, D, P."""
    name: str
    shapes: Sequence[Tuple[int, int]]
    batch: int
    queries: int
    heads: int
    channels: int
    points: int


CASES = (
    Case('one level, one head', [(3, 5)], batch=1, queries=7, heads=1, channels=4, points=2),
    Case('decoder-like', [(24, 32), (12, 16), (6, 8), (3, 4)], batch=2, queries=300, heads=8,
         channels=32, points=4),
    Case('non-square, D=40, 1x1', [(13, 7), (5, 19), (1, 1)], batch=2, queries=50, heads=4,
         channels=40, points=3),
    Case('encoder-like, Lq=3190', [(40, 60), (20, 30), (10, 15), (5, 8)], batch=3, queries=3190,
         heads=8, channels=32, points=4),
    Case('D=8, P=1', [(9, 4), (2, 2)], batch=2, queries=64, heads=2, channels=8, points=1),
    Case('N=65', [(8, 12), (4, 6)], batch=65, queries=20, heads=8, channels=32, points=4),
)


def run_comparisons(device: torch.device) -> List[bool]:
    """One table row per (case, dtype): the errors of the output and the three gradients."""
    passed = []
    print(f'{"case":<24}{"dtype":<10}{"output":>10}{"grad_v":>10}{"grad_loc":>10}{"grad_attn":>10}'
          f'{"tol":>10}  result')
    for case in CASES:
        generator = torch.Generator().manual_seed(0)
        problem = random_problem(case.shapes, case.batch, case.queries, case.heads, case.channels,
                                 case.points, generator)
        grad_output = torch.randn(case.batch, case.queries, case.heads * case.channels,
                                  dtype=torch.float64, generator=generator)
        for dtype, tolerance in TOLERANCES.items():
            coordinate_dtype = torch.float64 if dtype == torch.float64 else torch.float32
            errors = errors_against_pytorch(ms_deform_attn_cuda,
                                            problem.to(device, dtype, coordinate_dtype),
                                            grad_output.to(device, dtype))
            ok = all(error <= tolerance for error in errors.values())
            passed.append(ok)
            columns = ''.join(f'{error:>10.2e}' for error in errors.values())
            print(f'{case.name:<24}{str(dtype).replace("torch.", ""):<10}{columns}{tolerance:>10.1e}'
                  f'  {"ok" if ok else "FAIL"}')
    return passed


def run_gradcheck(device: torch.device) -> bool:
    """`torch.autograd.gradcheck` of the extension in float64 (atomicAdd order may vary)."""
    problem = random_problem([(3, 4), (2, 3)], batch=1, queries=2, heads=2, channels=3, points=2,
                             generator=torch.Generator().manual_seed(0))
    inputs = Problem(*(tensor.to(device) for tensor in problem))
    inputs = inputs._replace(value=inputs.value.requires_grad_(),
                             sampling_locations=inputs.sampling_locations.requires_grad_(),
                             attention_weights=inputs.attention_weights.requires_grad_())
    try:
        ok = torch.autograd.gradcheck(ms_deform_attn_cuda, tuple(inputs), nondet_tol=1e-10)
    except RuntimeError as error:
        print(f'gradcheck float64: {error}')
        ok = False
    print(f'{"gradcheck":<24}{"float64":<10}{"":>50}  {"ok" if ok else "FAIL"}')
    return ok


def run_autocast(device: torch.device) -> bool:
    """Under float16 autocast, as in MSDeformAttn (value from a Linear in float16, locations and
    weights in float32): output and gradients of the extension vs the PyTorch implementation."""
    generator = torch.Generator().manual_seed(0)
    problem = random_problem([(16, 20), (8, 10)], batch=2, queries=30, heads=4, channels=16,
                             points=4, generator=generator).to(device, torch.float32, torch.float32)
    grad_output = torch.randn(2, 30, 4 * 16, generator=generator).to(device)
    projection = torch.nn.Linear(16, 16).to(device)
    results = []
    for implementation in (ms_deform_attn_cuda, ms_deform_attn_pytorch):
        locations = problem.sampling_locations.clone().requires_grad_()
        weights = problem.attention_weights.clone().requires_grad_()
        with torch.autocast('cuda', dtype=torch.float16):
            output = implementation(projection(problem.value), problem.spatial_shapes,
                                    problem.level_start_index, locations, weights)
        grads = torch.autograd.grad(output.float(), (projection.weight, locations, weights),
                                    grad_output)
        results.append([output.float(), *grads])
    error = max(((result - reference).abs().max() / reference.abs().max()).item()
                for result, reference in zip(*results))
    ok = error <= AUTOCAST_TOLERANCE
    print(f'{"autocast, Linear value":<24}{"float16":<10}{error:>10.2e}{"(max of output and grads)":>40}'
          f'{AUTOCAST_TOLERANCE:>10.1e}  {"ok" if ok else "FAIL"}')
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print('no CUDA device: nothing to check, skipping the deformable attention self-test')
        return 0
    extension, unavailable = load_extension()
    if extension is None:
        print(f'deformable attention self-test: {unavailable}')
        return 1
    device = torch.device('cuda', torch.cuda.current_device())
    print(f'deformable attention self-test on {device} ({torch.cuda.get_device_name(device)}); '
          'errors relative to the largest float64 reference magnitude')
    passed = run_comparisons(device) + [run_gradcheck(device), run_autocast(device)]
    failures = passed.count(False)
    print(f'{len(passed) - failures}/{len(passed)} checks passed')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())

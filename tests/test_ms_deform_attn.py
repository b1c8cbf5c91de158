"""Multi-scale deformable attention: the PyTorch reference, the CUDA extension and the dispatch."""
import importlib.util
import logging
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from models.ops import MSDeformAttn, extension, ms_deform_attn, ms_deform_attn_pytorch, verification
from models.ops.extension import ms_deform_attn_cuda
from models.ops.verification import errors_against_pytorch, random_problem

OPS_DIR = Path(__file__).resolve().parents[1] / 'models' / 'ops'
SHAPES = [(4, 6), (3, 2)]


def small_problem(dtype=torch.float64, seed=0):
    """Two levels of different sizes, points inside, across the border and fully outside."""
    problem = random_problem(SHAPES, batch=2, queries=3, heads=2, channels=5, points=3,
                             generator=torch.Generator().manual_seed(seed))
    return problem.to('cpu', dtype, dtype)


def naive_ms_deform_attn(value, shapes, sampling_locations, attention_weights):
    """Point by point: pixel (x * w - 0.5, y * h - 0.5), four neighbours, zero outside the map."""
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    output = torch.zeros(batch, queries, heads, channels, dtype=value.dtype)
    level_start = 0
    for level, (h, w) in enumerate(shapes):
        level_value = value[:, level_start:level_start + h * w].reshape(batch, h, w, heads, channels)
        level_start += h * w
        for n in range(batch):
            for q in range(queries):
                for m in range(heads):
                    for p in range(points):
                        x_normalised, y_normalised = sampling_locations[n, q, m, level, p].tolist()
                        x, y = x_normalised * w - 0.5, y_normalised * h - 0.5
                        left, top = math.floor(x), math.floor(y)
                        for column, row in ((left, top), (left + 1, top), (left, top + 1), (left + 1, top + 1)):
                            if 0 <= column < w and 0 <= row < h:
                                weight = (1 - abs(x - column)) * (1 - abs(y - row))
                                output[n, q, m] += (attention_weights[n, q, m, level, p] * weight
                                                    * level_value[n, row, column, m])
    return output.flatten(2)


def test_pytorch_implementation_matches_naive_bilinear_sampling():
    problem = small_problem()
    pixels = problem.sampling_locations * problem.spatial_shapes.flip(-1)[:, None, :] - 0.5
    sizes_xy = problem.spatial_shapes.flip(-1)[:, None, :]
    outside = ((pixels < -1) | (pixels >= sizes_xy)).any(-1)
    assert outside.any() and not outside.all()
    expected = naive_ms_deform_attn(problem.value, SHAPES, problem.sampling_locations,
                                    problem.attention_weights)
    torch.testing.assert_close(ms_deform_attn_pytorch(*problem), expected)


def test_pytorch_implementation_gradcheck():
    problem = small_problem()
    inputs = problem._replace(value=problem.value.requires_grad_(),
                              sampling_locations=problem.sampling_locations.requires_grad_(),
                              attention_weights=problem.attention_weights.requires_grad_())
    assert torch.autograd.gradcheck(ms_deform_attn_pytorch, tuple(inputs))


class PyTorchBackedExtension:
    """Stands in for `models.ops._C` on CPU: the extension's API computed by the PyTorch
    implementation, optionally corrupted, recording its calls and the dtypes it received."""

    def __init__(self, output_error: float = 0.0, location_grad_sign: float = 1.0,
                 failure: str = ''):
        self.output_error = output_error
        self.location_grad_sign = location_grad_sign
        self.failure = failure
        self.forward_calls = 0
        self.dtypes = None

    def forward(self, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        if self.failure:
            raise RuntimeError(self.failure)
        self.forward_calls += 1
        self.dtypes = (value.dtype, sampling_locations.dtype, attention_weights.dtype)
        output = ms_deform_attn_pytorch(value.to(sampling_locations.dtype), spatial_shapes,
                                        level_start_index, sampling_locations, attention_weights)
        return (output + self.output_error).to(value.dtype)

    def backward(self, value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights, grad_output):
        inputs = [tensor.detach().requires_grad_() for tensor in
                  (value.to(sampling_locations.dtype), sampling_locations, attention_weights)]
        with torch.enable_grad():
            output = ms_deform_attn_pytorch(inputs[0], spatial_shapes, level_start_index, *inputs[1:])
            grad_value, grad_locations, grad_weights = torch.autograd.grad(
                output, inputs, grad_output.to(output.dtype))
        return [grad_value.to(value.dtype), self.location_grad_sign * grad_locations, grad_weights]


@pytest.fixture
def cpu_as_extension_device(monkeypatch):
    """Fresh dispatch decisions, with the extension also tried for CPU tensors."""
    monkeypatch.setattr(verification, '_device_verdicts', {})
    monkeypatch.setattr(verification, 'EXTENSION_DEVICE_TYPES', ('cuda', 'cpu'))
    return monkeypatch


def dispatch_log(caplog):
    return [record.getMessage() for record in caplog.records if record.name == 'models.ops']


@pytest.mark.parametrize('broken, warning', [
    (PyTorchBackedExtension(output_error=1e-2), 'max error .* in output'),
    (PyTorchBackedExtension(location_grad_sign=-1.0), 'max error .* in grad_sampling_locations'),
    (PyTorchBackedExtension(failure='no kernel image is available'), 'no kernel image'),
], ids=['wrong-output', 'wrong-location-gradient', 'kernel-error'])
def test_dispatch_falls_back_when_extension_disagrees(cpu_as_extension_device, caplog, broken, warning):
    cpu_as_extension_device.setattr(extension, 'load_extension', lambda: (broken, ''))
    problem = small_problem(torch.float32)
    with caplog.at_level(logging.INFO, logger='models.ops'):
        with pytest.warns(UserWarning, match=warning):
            output = ms_deform_attn(*problem)
        calls_during_check = broken.forward_calls
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            output_again = ms_deform_attn(*problem)
    assert not verification.cuda_extension_verified('cpu')
    assert broken.forward_calls == calls_during_check
    torch.testing.assert_close(output, ms_deform_attn_pytorch(*problem))
    torch.testing.assert_close(output_again, output)
    assert dispatch_log(caplog) == [
        'deformable attention: PyTorch implementation (CUDA extension failed its check on cpu)']


def test_dispatch_runs_verified_extension_with_autograd(cpu_as_extension_device, caplog):
    fake = PyTorchBackedExtension()
    cpu_as_extension_device.setattr(extension, 'load_extension', lambda: (fake, ''))
    with caplog.at_level(logging.INFO, logger='models.ops'):
        assert verification.cuda_extension_verified('cpu')
        assert verification.cuda_extension_verified(torch.device('cpu'))
    assert dispatch_log(caplog) == ['deformable attention: CUDA extension (verified on cpu)']

    problem = small_problem()
    grad_output = torch.randn(2, 3, 2 * 5, dtype=torch.float64)
    calls_before = fake.forward_calls
    errors = errors_against_pytorch(ms_deform_attn, problem, grad_output)
    assert fake.forward_calls == calls_before + 1
    assert max(errors.values()) < 1e-12, errors


def test_extension_wrapper_runs_locations_and_weights_in_float32_for_half_value(monkeypatch):
    fake = PyTorchBackedExtension()
    monkeypatch.setattr(extension, 'load_extension', lambda: (fake, ''))
    problem = small_problem(torch.float16)
    output = ms_deform_attn_cuda(*problem)
    assert fake.dtypes == (torch.float16, torch.float32, torch.float32)
    assert output.dtype == torch.float16
    expected = ms_deform_attn_pytorch(*problem.to('cpu', torch.float32, torch.float32))
    torch.testing.assert_close(output.float(), expected, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize('extension_device_types, expected_line', [
    (('cuda',), 'deformable attention: PyTorch implementation (cpu tensors)'),
    (('cuda', 'cpu'), 'deformable attention: PyTorch implementation (extension not built: run '
                      '`cd models/ops && python setup.py build_ext --inplace`)'),
], ids=['cpu-tensors', 'not-built'])
def test_dispatch_logs_pytorch_path_once(monkeypatch, caplog, extension_device_types, expected_line):
    monkeypatch.setattr(verification, '_device_verdicts', {})
    monkeypatch.setattr(verification, 'EXTENSION_DEVICE_TYPES', extension_device_types)
    monkeypatch.setattr(extension, 'load_extension', lambda: (
        None, 'extension not built: run `cd models/ops && python setup.py build_ext --inplace`'))
    problem = small_problem()
    with caplog.at_level(logging.INFO, logger='models.ops'):
        outputs = [ms_deform_attn(*problem) for _ in range(2)]
    assert dispatch_log(caplog) == [expected_line]
    torch.testing.assert_close(outputs[0], ms_deform_attn_pytorch(*problem))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype, tolerance', [(torch.float64, 1e-10), (torch.float32, 2e-5),
                                              (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_cuda_extension_matches_pytorch(monkeypatch, dtype, tolerance):
    if extension.load_extension()[0] is None:
        pytest.skip(extension.load_extension()[1])
    monkeypatch.setattr(verification, '_device_verdicts', {})
    assert verification.cuda_extension_verified('cuda')
    generator = torch.Generator().manual_seed(0)
    problem = random_problem([(13, 7), (5, 19), (1, 1)], batch=2, queries=1100, heads=4,
                             channels=40, points=3, generator=generator)
    grad_output = torch.randn(2, 1100, 4 * 40, dtype=torch.float64, generator=generator)
    coordinate_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    errors = errors_against_pytorch(ms_deform_attn_cuda, problem.to('cuda', dtype, coordinate_dtype),
                                    grad_output.to('cuda', dtype))
    assert max(errors.values()) <= tolerance, errors


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('nvcc') is None, reason='no nvcc on PATH')
def test_extension_compiles(tmp_path):
    """The real setup.py, finding CUDA_HOME itself, builds a loadable module (one arch, out of tree)."""
    environment = {key: value for key, value in os.environ.items() if key not in ('CUDA_HOME', 'CUDA_PATH')}
    environment['TORCH_CUDA_ARCH_LIST'] = '8.0'
    build = subprocess.run(
        [sys.executable, 'setup.py', 'build_ext', '--build-lib', str(tmp_path / 'lib'),
         '--build-temp', str(tmp_path / 'temp')],
        cwd=OPS_DIR, env=environment, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    [library] = (tmp_path / 'lib').glob('_C*.so')
    spec = importlib.util.spec_from_file_location('_C', library)
    compiled = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compiled)
    with pytest.raises(RuntimeError, match='value must be a CUDA tensor'):
        compiled.forward(*small_problem(torch.float32))


@pytest.mark.parametrize('reference_dims', [2, 4])
def test_module_matches_direct_computation(reference_dims):
    torch.manual_seed(0)
    heads, levels, points, channels = 2, 2, 3, 8
    shapes = torch.tensor([(5, 7), (3, 2)])
    level_start_index = torch.tensor([0, 35])
    module = MSDeformAttn(d_model=heads * channels, n_levels=levels, n_heads=heads, n_points=points).double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.3)
    query = torch.randn(2, 4, heads * channels, dtype=torch.float64)
    input_flatten = torch.randn(2, 41, heads * channels, dtype=torch.float64)
    padding_mask = torch.rand(2, 41) < 0.2
    reference_points = torch.rand(2, 4, levels, reference_dims, dtype=torch.float64)

    value = module.value_proj(input_flatten).masked_fill(padding_mask[..., None], 0.0)
    offsets = module.sampling_offsets(query).view(2, 4, heads, levels, points, 2)
    weights = module.attention_weights(query).view(2, 4, heads, levels * points).softmax(-1)
    if reference_dims == 2:
        width_height = torch.stack([shapes[:, 1], shapes[:, 0]], -1)
        locations = reference_points[:, :, None, :, None, :] + offsets / width_height[:, None, :]
    else:
        locations = (reference_points[:, :, None, :, None, :2]
                     + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5)
    attended = ms_deform_attn_pytorch(value.view(2, 41, heads, channels), shapes, level_start_index,
                                      locations, weights.view(2, 4, heads, levels, points))
    expected = module.output_proj(attended)

    output = module(query, reference_points, input_flatten, shapes, level_start_index, padding_mask)
    torch.testing.assert_close(output, expected)

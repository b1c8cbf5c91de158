"""The fast formulations compute the same function as the straightforward ones: the gathered
deformable attention, the dynamic mask head, chunked token-wise layers, the folded frozen batch
norm, and the whole model against `tools/reference_formulation.py`; no host synchronisation in
the forward pass; mixed precision (CPU autocast here, CUDA autocast where there is a GPU)."""
from typing import Dict

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import models.bifit
import models.inter_frame
import models.layers
import models.ops.modules
import models.pixel_decoder
from models.backbone import ResNetBody
from models.dynamic_mask_head import dynamic_mask_logits, dynamic_param_sizes
from models.ops import MSDeformAttn, ms_deform_attn_gather, ms_deform_attn_pytorch
from models.ops.verification import random_problem
from models.pixel_decoder import VisionLanguageBlock
from tests.conftest import CAPTIONS, CLIP_SIZES, build_small, clip_targets, random_clips, weighted_loss
from tools.reference_formulation import (grouped_conv_mask_logits, per_level_grid_sample, reference_formulation,
                                         switch_off_dropout, torchvision_resnet_forward, unchunked_post_norm_ffn)
from util.misc import NestedTensor
from util.precision import autocast, to_float32

SHAPES = [(4, 6), (3, 2), (1, 1)]
SMALL_SIZES = [(64, 64), (32, 64)]


def problem(dtype=torch.float64, queries=5, seed=0):
    """Three levels (one 1x1); sampling points inside, across the border and fully outside."""
    return random_problem(SHAPES, batch=2, queries=queries, heads=2, channels=3, points=3,
                          generator=torch.Generator().manual_seed(seed)).to('cpu', dtype, dtype)


def output_and_grads(implementation, value, locations, weights, grad_output):
    inputs = [tensor.detach().requires_grad_() for tensor in (value, locations, weights)]
    output = implementation(*inputs)
    return [output.detach(), *torch.autograd.grad(output, inputs, grad_output)]


def gathered(value, locations, weights):
    return ms_deform_attn_gather(value, SHAPES, locations, weights)


def per_level(value, locations, weights):
    return ms_deform_attn_pytorch(value, torch.tensor(SHAPES), None, locations, weights)


@pytest.mark.parametrize('chunk_elements', [2 ** 22, 50], ids=['one-chunk', 'many-chunks'])
def test_gather_equals_per_level_grid_sample(monkeypatch, chunk_elements):
    monkeypatch.setattr(models.layers, 'CHUNK_ELEMENTS', chunk_elements)
    value, _, _, locations, weights = problem(queries=11)
    pixels = locations * torch.tensor(SHAPES).flip(-1)[:, None, :] - 0.5
    outside = ((pixels < -1) | (pixels >= torch.tensor(SHAPES).flip(-1)[:, None, :])).any(-1)
    assert outside.any() and not outside.all()
    grad_output = torch.randn(2, 11, 2 * 3, dtype=torch.float64)
    for ours, reference in zip(output_and_grads(gathered, value, locations, weights, grad_output),
                               output_and_grads(per_level, value, locations, weights, grad_output)):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


def test_gather_gradcheck():
    value, _, _, locations, weights = problem(queries=2)
    inputs = tuple(tensor.requires_grad_() for tensor in (value, locations, weights))
    assert torch.autograd.gradcheck(gathered, inputs)


def test_gather_computes_half_precision_value_in_float32():
    """As under --amp on a GPU without the extension: a bfloat16 value, float32 locations and weights; the
    gradients computed in float32 and returned in each input's dtype."""
    value, _, _, locations, weights = problem(torch.float32)
    half_value = value.bfloat16().requires_grad_()
    locations.requires_grad_()
    output = gathered(half_value, locations, weights)
    assert output.dtype == torch.bfloat16
    expected = per_level(value.bfloat16().float(), locations, weights)
    torch.testing.assert_close(output.float(), expected, rtol=1e-2, atol=1e-2)
    grad_output = torch.randn(expected.shape)
    grad_value, grad_locations = torch.autograd.grad(output, (half_value, locations), grad_output.bfloat16())
    exact_value = value.bfloat16().float().requires_grad_()
    expected_grads = torch.autograd.grad(per_level(exact_value, locations, weights), (exact_value, locations),
                                         grad_output.bfloat16().float())
    assert (grad_value.dtype, grad_locations.dtype) == (torch.bfloat16, torch.float32)
    torch.testing.assert_close(grad_value.float(), expected_grads[0], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(grad_locations, expected_grads[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('reference_dims', [2, 4])
def test_module_with_gather_equals_per_level_grid_sample(monkeypatch, reference_dims):
    """MSDeformAttn with padded values, 2-d and 4-d reference points: output and parameter gradients."""
    torch.manual_seed(0)
    levels, heads = len(SHAPES), 2
    module = MSDeformAttn(d_model=8, n_levels=levels, n_heads=heads, n_points=3).double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.5)
    spatial_shapes = torch.tensor(SHAPES)
    level_start_index = torch.tensor([0, 24, 30])
    query = torch.randn(2, 7, 8, dtype=torch.float64)
    input_flatten = torch.randn(2, 31, 8, dtype=torch.float64)
    padding_mask = torch.rand(2, 31) < 0.3
    reference_points = torch.rand(2, 7, levels, reference_dims, dtype=torch.float64)

    def run():
        module.zero_grad()
        output = module(query, reference_points, input_flatten, spatial_shapes, level_start_index,
                        padding_mask, shapes=SHAPES)
        output.square().sum().backward()
        return [output.detach()] + [p.grad.clone() for p in module.parameters()]

    fast = run()
    monkeypatch.setattr(models.ops.modules, 'ms_deform_attn', lambda v, s, i, loc, w, shapes=None:
                        ms_deform_attn_pytorch(v, s, i, loc, w))
    for ours, reference in zip(fast, run()):
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-10)


def test_dynamic_head_equals_grouped_convolution():
    torch.manual_seed(0)
    channels, c = 8, 6
    weight_nums, bias_nums = dynamic_param_sizes(c, channels, 3, rel_coord=True)
    mask_features = torch.randn(2, 3, c, 5, 7, dtype=torch.float64, requires_grad=True)
    params = torch.randn(2, 3, 4, sum(weight_nums) + sum(bias_nums), dtype=torch.float64, requires_grad=True)
    references = (torch.rand(2, 3, 4, 2, dtype=torch.float64) * 28).requires_grad_()
    ours = dynamic_mask_logits(mask_features, params, references, channels, weight_nums, bias_nums, True)
    theirs = grouped_conv_mask_logits(mask_features, params, references, channels, weight_nums, bias_nums, True)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, (mask_features, params, references), grad),
                    torch.autograd.grad(theirs, (mask_features, params, references), grad)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('name', ['resnet18', 'resnet50'])
def test_folded_frozen_batch_norm_equals_torchvision(name):
    torch.manual_seed(0)
    body = ResNetBody(name, train_backbone=True, dilation=False, pretrained=False).double().eval()
    for module in body.modules():
        if hasattr(module, 'running_var'):
            module.running_var.uniform_(0.5, 2)
            module.running_mean.normal_()
            module.weight.normal_(1, 0.2)
            module.bias.normal_()
    frames = NestedTensor(torch.randn(2, 3, 64, 96, dtype=torch.float64), torch.zeros(2, 64, 96, dtype=torch.bool))
    ours, reference = body(frames), torchvision_resnet_forward(body, frames)
    for a, b in zip(ours, reference):
        assert a.tensors.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a.tensors, b.tensors)
        assert torch.equal(a.mask, b.mask)


def test_chunked_feed_forward_equals_all_tokens(monkeypatch):
    torch.manual_seed(0)
    linear1, linear2, norm = torch.nn.Linear(8, 32), torch.nn.Linear(32, 8), torch.nn.LayerNorm(8)
    x = torch.randn(13, 2, 8, requires_grad=True)
    parameters = [x, *linear1.parameters(), *linear2.parameters(), *norm.parameters()]
    grad_output = torch.randn(13, 2, 8)

    def output_and_grads():
        output = models.layers.post_norm_ffn(x, linear1, linear2, torch.nn.Identity(), torch.nn.Identity(), norm)
        return [output.detach(), *torch.autograd.grad(output, parameters, grad_output)]

    expected = output_and_grads()
    monkeypatch.setattr(models.layers, 'CHUNK_ELEMENTS', 3 * 32)
    with torch.no_grad():
        chunked = models.layers.post_norm_ffn(x, linear1, linear2, torch.nn.Identity(), torch.nn.Identity(), norm)
    torch.testing.assert_close(chunked, expected[0])
    for ours, reference in zip(output_and_grads(), expected):
        torch.testing.assert_close(ours, reference)


def small_model(flags=()):
    """`build_small` with random (rather than zero) sampling-offset and attention-weight projections, so
    that every query of the deformable attention samples its own locations."""
    model, criterion = build_small(flags)
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            torch.nn.init.normal_(module.sampling_offsets.weight, std=0.05)
            torch.nn.init.normal_(module.attention_weights.weight, std=0.05)
    return model, criterion


def assert_outputs_close(ours: Dict, reference: Dict) -> None:
    """The fixture tolerances: logits, boxes, reference points 1e-4; masks 1e-4 of their largest magnitude."""
    pairs = [(k, ours[k], reference[k]) for k in ('pred_logits', 'pred_boxes', 'pred_masks', 'reference_points')]
    for i, (a, b) in enumerate(zip(ours['aux_outputs'], reference['aux_outputs'])):
        pairs += [(f'aux {i} {k}', a[k], b[k]) for k in b]
    for name, a, b in pairs:
        atol = 1e-4 * b.abs().max().item() if 'mask' in name else 1e-4
        torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=name)


def test_model_equals_reference_formulation(monkeypatch):
    """Eval outputs, with the token-wise layers split into several chunks."""
    model, _ = small_model()
    model.eval()
    monkeypatch.setattr(models.layers, 'CHUNK_ELEMENTS', 40000)
    videos = random_clips(2, 3, CLIP_SIZES)
    targets = [{'size': torch.tensor(v.shape[-2:])} for v in videos]
    with torch.no_grad():
        fast = model(videos, CAPTIONS, targets)
        with reference_formulation(model):
            reference = model(videos, CAPTIONS, targets)
    assert_outputs_close(fast, reference)


def test_reference_formulation_switches_every_fast_path_and_restores_them():
    model, _ = small_model()
    vision_language = next(m for m in model.modules() if isinstance(m, VisionLanguageBlock))
    attention = next(m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention))
    with reference_formulation(model):
        assert models.bifit.dynamic_mask_logits is grouped_conv_mask_logits
        assert models.ops.modules.ms_deform_attn is per_level_grid_sample
        assert models.pixel_decoder.post_norm_ffn is models.inter_frame.post_norm_ffn is unchunked_post_norm_ffn
        assert model.backbone[0].forward.__func__ is torchvision_resnet_forward
        assert 'forward' in vars(vision_language) and 'forward' in vars(attention)
    assert models.bifit.dynamic_mask_logits is dynamic_mask_logits
    assert models.pixel_decoder.post_norm_ffn is models.layers.post_norm_ffn
    assert 'forward' not in vars(model.backbone[0]) and 'forward' not in vars(attention)


def test_reference_formulation_fails_when_a_fast_path_is_no_longer_used(monkeypatch):
    """A fast path renamed or replaced (here: the mask head no longer calls `dynamic_mask_logits`) must not
    leave the oracle comparing the fast formulation with itself."""
    model, _ = small_model()
    monkeypatch.setattr(models.bifit, 'dynamic_mask_logits', lambda *args: dynamic_mask_logits(*args))
    with pytest.raises(RuntimeError, match='calls models.dynamic_mask_head.dynamic_mask_logits any more'):
        with reference_formulation(model):
            pass


def test_training_step_equals_reference_formulation():
    """Losses and gradients of a training step (dropout off so that both draw nothing at random)."""
    model, criterion = small_model(['--dropout', '0'])
    model.train()
    switch_off_dropout(model)
    videos = random_clips(2, 2, SMALL_SIZES)
    targets = clip_targets(videos)

    def step():
        model.zero_grad(set_to_none=True)
        total, losses = weighted_loss(criterion, model(videos, CAPTIONS, targets), targets)
        total.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return losses, grads

    fast_losses, fast_grads = step()
    with reference_formulation(model):
        reference_losses, reference_grads = step()
    for name, value in reference_losses.items():
        assert fast_losses[name].item() == pytest.approx(value.item(), abs=1e-4), name
    assert fast_grads.keys() == reference_grads.keys()
    for name, grad in reference_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-3, atol=1e-3 * grad.abs().max().item() + 1e-7,
                                   msg=name)


class HostReads(TorchDispatchMode):
    """Records operators that read tensor values back on the host (a synchronisation on CUDA)."""

    READS = ('aten._local_scalar_dense', 'aten.nonzero', 'aten.item', 'aten.is_nonzero', 'aten.equal')

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(str(func).startswith(name) for name in self.READS):
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('annotated', [False, True], ids=['clips', 'annotated-frame'])
def test_forward_reads_nothing_back_on_the_host(monkeypatch, annotated):
    model, _ = small_model(['--dataset_file', 'a2d'] if annotated else [])
    model.eval()
    videos = random_clips(2, 3, CLIP_SIZES)
    targets = [{'size': torch.tensor(v.shape[-2:])} for v in videos]
    if annotated:
        targets = [dict(t, valid_indices=torch.tensor([1])) for t in targets]

    def no_tolist(tensor):
        raise AssertionError('Tensor.tolist() in the forward pass')

    monkeypatch.setattr(torch.Tensor, 'tolist', no_tolist)
    with torch.no_grad(), HostReads() as mode:
        model(videos, CAPTIONS, targets)
    assert mode.reads == []


def test_training_backward_reads_nothing_back_on_the_host(monkeypatch):
    """The backward pass and the gradient clipping of a training step (engine.py) never wait for the device:
    no operator that reads values back, no Tensor.item/tolist/__bool__. (AdamW's step counters live on the
    host unless the optimiser is fused or capturable, so its step is left out.)"""
    model, criterion = small_model()
    model.train()
    videos = random_clips(2, 2, SMALL_SIZES)
    targets = clip_targets(videos)
    total, _ = weighted_loss(criterion, model(videos, CAPTIONS, targets), targets)
    calls = []
    for method in ('item', 'tolist', '__bool__'):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method, lambda *a, _name=method, _original=original:
                            calls.append(_name) or _original(*a))
    with HostReads() as mode:
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    assert mode.reads == [] and calls == []


def test_activation_checkpointing_keeps_losses_and_gradients_and_stores_less():
    """`--activation_checkpointing`: the same losses and gradients (dropout on: the recomputation replays
    the random state), and fewer bytes saved for the backward pass."""
    model, criterion = small_model(['--activation_checkpointing'])
    model.train()
    videos = random_clips(2, 2, SMALL_SIZES)
    targets = clip_targets(videos)
    switches = [m for m in model.modules() if hasattr(m, 'activation_checkpointing')]
    assert len(switches) == 3 and all(m.activation_checkpointing for m in switches)

    def step():
        saved = []

        def pack(tensor):
            saved.append(tensor.numel() * tensor.element_size())
            return tensor
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            total, losses = weighted_loss(criterion, model(videos, CAPTIONS, targets), targets)
        total.backward()
        return losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sum(saved)

    checkpointed_losses, checkpointed_grads, checkpointed_bytes = step()
    for module in switches:
        module.activation_checkpointing = False
    losses, grads, stored_bytes = step()
    assert checkpointed_bytes < 0.7 * stored_bytes
    for name, value in losses.items():
        assert checkpointed_losses[name].item() == pytest.approx(value.item(), abs=1e-5), name
    assert checkpointed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item() + 1e-8,
                                   msg=name)


def assert_mixed_precision_close(model, criterion, device, autocast_context):
    videos = [v.to(device) for v in random_clips(2, 2, SMALL_SIZES)]
    targets = [{k: v.to(device) for k, v in t.items()} for t in clip_targets(videos)]
    model.to(device).eval()
    with torch.no_grad():
        full = model(videos, CAPTIONS, targets)
        with autocast_context():
            mixed = to_float32(model(videos, CAPTIONS, targets))
    for key, atol in (('pred_logits', 0.1), ('pred_boxes', 0.02), ('reference_points', 0.02)):
        torch.testing.assert_close(mixed[key], full[key], rtol=0, atol=atol, msg=key)
    masks = full['pred_masks']
    assert (mixed['pred_masks'] - masks).abs().max() <= 0.1 * masks.abs().max() + 0.1
    model.train()
    with autocast_context():
        outputs = model(videos, CAPTIONS, targets)
    total, _ = weighted_loss(criterion, to_float32(outputs), targets)
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cpu_bfloat16_autocast():
    """The dtype plumbing of mixed precision, exercised by CPU autocast."""
    model, criterion = small_model()
    assert_mixed_precision_close(model, criterion, torch.device('cpu'),
                                 lambda: torch.autocast('cpu', dtype=torch.bfloat16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_amp_on_cuda():
    """`--amp`: bfloat16 autocast on CUDA, close to float32; a finite training step."""
    model, criterion = small_model()
    device = torch.device('cuda')
    assert_mixed_precision_close(model, criterion, device, lambda: autocast(device, True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_forward_does_not_synchronise():
    """After a first pass (which may verify the CUDA extension), the forward never waits for the GPU."""
    model, _ = small_model()
    device = torch.device('cuda')
    model.to(device).eval()
    videos = [v.to(device) for v in random_clips(2, 2, CLIP_SIZES)]
    targets = [{'size': torch.tensor(v.shape[-2:], device=device)} for v in videos]
    with torch.no_grad(), autocast(device, True):
        model(videos, CAPTIONS, targets)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            model(videos, CAPTIONS, targets)
        finally:
            torch.cuda.set_sync_debug_mode('default')

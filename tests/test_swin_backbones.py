"""Swin and Video Swin backbones: configurations, the original BIFIT's checkpoint layout, feature shapes, the
authors' checkpoints, the original's shift rule, activation checkpointing, and a whole BIFIT model trained
with each."""
import itertools
import math
from typing import Dict, Tuple

import pytest
import torch
import torch.nn.functional as F
import torchvision
from einops import rearrange
from torch import Tensor, nn
from torchvision.models.swin_transformer import SwinTransformerBlock
from torchvision.models.video.swin_transformer import SwinTransformer3d

from models import build_model
from models.backbone import BACKBONES, build_backbone
from models.swin import (IMAGE_SWINS, PRETRAINED_REQUIRED, VIDEO_SWINS, SwinBody, SwinSize, VideoSwinBody,
                         build_swin_body)
from tests.conftest import (CAPTIONS, SMALL_FULL_WIDTH, assert_gradients_reach_the_trainable_parameters,
                            clip_targets, parse_args, random_clips, weighted_loss)
from util.checkpoint import load_model_weights
from util.misc import NestedTensor, downsample_mask

DOCUMENTED = {  # name: (channels, blocks per stage, heads per stage, last block's drop path rate)
    'swin_t_p4w7': ([96, 192, 384, 768], [2, 2, 6, 2], [3, 6, 12, 24], 0.2),
    'swin_s_p4w7': ([96, 192, 384, 768], [2, 2, 18, 2], [3, 6, 12, 24], 0.2),
    'swin_b_p4w7': ([128, 256, 512, 1024], [2, 2, 18, 2], [4, 8, 16, 32], 0.3),
    'swin_l_p4w7': ([192, 384, 768, 1536], [2, 2, 18, 2], [6, 12, 24, 48], 0.3),
    'video_swin_t_p4w7': ([96, 192, 384, 768], [2, 2, 6, 2], [3, 6, 12, 24], 0.2),
    'video_swin_s_p4w7': ([96, 192, 384, 768], [2, 2, 18, 2], [3, 6, 12, 24], 0.2),
    'video_swin_b_p4w7': ([128, 256, 512, 1024], [2, 2, 18, 2], [4, 8, 16, 32], 0.2),
}
TINY = SwinSize(16, (2, 2, 2, 2), (1, 2, 2, 4))


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One intra-op thread: the machine's cores are shared, and these small tensors gain nothing from more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def video_batch(b: int, t: int, h: int, w: int, seed: int = 0) -> NestedTensor:
    """Random videos `[B, T, 3, H, W]`; the second clip has padding on the right and at the bottom."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, t, h, w, dtype=torch.bool)
    mask[1:, :, h - 9:] = True
    mask[1:, :, :, w - 13:] = True
    return NestedTensor(torch.randn(b, t, 3, h, w, generator=generator), mask)


def frames_of(videos: NestedTensor) -> NestedTensor:
    return NestedTensor(rearrange(videos.tensors, 'b t c h w -> (b t) c h w'),
                        rearrange(videos.mask, 'b t h w -> (b t) h w'))


def run_body(body: nn.Module, videos: NestedTensor):
    """The body's levels for a batch of videos, given as the `Joiner` gives them."""
    return body(videos if body.takes_clips else frames_of(videos))


def perturb(body: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere but in the per-output norms, which the authors' files do not hold."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in body.body.named_parameters():
            if not name.startswith(body.fresh_keys):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return body


def authors_checkpoint(body: nn.Module) -> dict:
    """`body`'s weights as the authors' ImageNet / Kinetics files hold them: without the per-output norms,
    with a classifier and a final norm; for Video Swin the patch mergings inside the stages
    (`layers.{i}.downsample`), a patch kernel of temporal size 2 and the `backbone.` prefix under
    `state_dict`."""
    state_dict = {}
    for key, value in body.body.state_dict().items():
        if key.startswith(body.fresh_keys):
            continue
        parts = key.split('.')
        if parts[0] == 'downsamples':
            key = '.'.join(['layers', parts[1], 'downsample', *parts[2:]])
        state_dict[key] = value
    channels = body.num_channels[-1]
    state_dict.update({'norm.weight': torch.rand(channels), 'norm.bias': torch.rand(channels),
                       'head.weight': torch.rand(10, channels), 'head.bias': torch.rand(10)})
    if not body.takes_clips:
        return {'model': state_dict}
    kernel = state_dict['patch_embed.proj.weight']
    first = torch.randn_like(kernel)
    state_dict['patch_embed.proj.weight'] = torch.cat([first, kernel - first], dim=2)
    backbone = {f'backbone.{k}': v for k, v in state_dict.items()}
    return {'state_dict': {**backbone, 'cls_head.fc_cls.weight': torch.rand(400, channels),
                           'cls_head.fc_cls.bias': torch.rand(400)}}


def torchvision_names(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Our (the original's) block weights under torchvision's names: `mlp.0` / `mlp.3`, a flat relative
    position index in 2-D."""
    renamed = {}
    for key, value in state_dict.items():
        if key.endswith('relative_position_index') and value.shape == (49, 49):
            value = value.flatten()
        renamed[key.replace('mlp.fc1.', 'mlp.0.').replace('mlp.fc2.', 'mlp.3.')] = value
    return renamed


def original_layout(size: SwinSize, video: bool) -> Dict[str, Tuple[int, ...]]:
    """The original BIFIT's `backbone.0.body.*` entries with a Swin backbone, in its order, with their shapes,
    written out from its modules: `patch_embed`; per stage the blocks (`norm1`, `attn` with its bias table
    and square index buffer, `qkv`, `proj`, `norm2`, `mlp.fc1`, `mlp.fc2`); the patch mergings inside the
    stages (`layers.{i}.downsample`, image) or after all stages (`downsamples.{i}`, the video wrapper); and
    the image Swin's output norms `norm{i}`."""
    c = size.embed_dim
    window = (8, 7, 7) if video else (7, 7)
    tokens, table = math.prod(window), math.prod(2 * w - 1 for w in window)
    layout = {'patch_embed.proj.weight': (c, 3, 1, 4, 4) if video else (c, 3, 4, 4),
              'patch_embed.proj.bias': (c,), 'patch_embed.norm.weight': (c,), 'patch_embed.norm.bias': (c,)}
    mergings = {}
    for i, (depth, heads) in enumerate(zip(size.depths, size.num_heads)):
        dim = c * 2 ** i
        for j in range(depth):
            block = f'layers.{i}.blocks.{j}.'
            layout.update({block + key: shape for key, shape in [
                ('norm1.weight', (dim,)), ('norm1.bias', (dim,)),
                ('attn.relative_position_bias_table', (table, heads)),
                ('attn.relative_position_index', (tokens, tokens)),
                ('attn.qkv.weight', (3 * dim, dim)), ('attn.qkv.bias', (3 * dim,)),
                ('attn.proj.weight', (dim, dim)), ('attn.proj.bias', (dim,)),
                ('norm2.weight', (dim,)), ('norm2.bias', (dim,)),
                ('mlp.fc1.weight', (4 * dim, dim)), ('mlp.fc1.bias', (4 * dim,)),
                ('mlp.fc2.weight', (dim, 4 * dim)), ('mlp.fc2.bias', (dim,))]})
        if i < len(size.depths) - 1:
            merging = {'reduction.weight': (2 * dim, 4 * dim), 'norm.weight': (4 * dim,), 'norm.bias': (4 * dim,)}
            if video:
                mergings.update({f'downsamples.{i}.{key}': shape for key, shape in merging.items()})
            else:
                layout.update({f'layers.{i}.downsample.{key}': shape for key, shape in merging.items()})
    layout.update(mergings)
    if not video:
        for i in range(len(size.depths)):
            layout.update({f'norm{i}.weight': (c * 2 ** i,), f'norm{i}.bias': (c * 2 ** i,)})
    return {f'backbone.0.body.{key}': shape for key, shape in layout.items()}


def original_relative_position_index(window: Tuple[int, ...]) -> Tensor:
    """The original's square index: relative offsets per axis shifted to >= 0, combined as mixed-radix digits
    with radices 2 * w - 1."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing='ij')).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    index = torch.zeros(relative.shape[:2], dtype=torch.long)
    for axis, w in enumerate(window):
        index = index * (2 * w - 1) + relative[..., axis] + w - 1
    return index


def original_window_attention(x: Tensor, attn: nn.Module, shift: int, window: int = 7) -> Tensor:
    """The authors' (shifted) window attention written out, x `[N, H, W, C]` -> `[N, H, W, C]`: pad
    right/bottom to multiples of the window, roll by -shift whatever the padded size, mask (-100) pairs from
    different regions (0, -w), (-w, -s), (-s, None) of the padded map, relative position bias, roll back, crop."""
    n, h, w, c = x.shape
    x = F.pad(x, (0, 0, 0, -w % window, 0, -h % window))
    padded_h, padded_w = x.shape[1:3]
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')).flatten(1)
    relative = coords[:, :, None] - coords[:, None, :] + window - 1
    bias = rearrange(attn.relative_position_bias_table[relative[0] * (2 * window - 1) + relative[1]],
                     'i j heads -> heads i j')
    mask = torch.zeros(1, 1, 1)
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
        region = torch.zeros(padded_h, padded_w)
        cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for label, (rows, cols) in enumerate(itertools.product(cuts, cuts)):
            region[rows, cols] = label
        region = rearrange(region, '(a i) (b j) -> (a b) (i j)', i=window, j=window)
        mask = (region[:, None, :] != region[:, :, None])[:, None] * -100.0
    windows = rearrange(x, 'n (a i) (b j) c -> n (a b) (i j) c', i=window, j=window)
    q, k, v = rearrange(attn.qkv(windows), 'n w t (three heads d) -> three n w heads t d',
                        three=3, heads=attn.num_heads)
    logits = (q * (c // attn.num_heads) ** -0.5) @ k.transpose(-1, -2) + bias + mask
    out = attn.proj(rearrange(logits.softmax(-1) @ v, 'n w heads t d -> n w t (heads d)'))
    x = rearrange(out, 'n (a b) (i j) c -> n (a i) (b j) c', a=padded_h // window, i=window)
    if shift:
        x = torch.roll(x, (shift, shift), (1, 2))
    return x[:, :h, :w]


def test_every_swin_option_has_a_body():
    assert set(IMAGE_SWINS) | set(VIDEO_SWINS) == set(DOCUMENTED) == {b for b in BACKBONES if 'swin' in b}


@pytest.mark.parametrize('name', list(DOCUMENTED))
def test_variants_have_the_documented_configuration(name):
    channels, depths, heads, drop_path = DOCUMENTED[name]
    video = name.startswith('video')
    with torch.device('meta'):
        body = build_swin_body(name, False, train_backbone=True, use_checkpoint=False)
    assert body.strides == [4, 8, 16, 32] and body.num_channels == channels
    assert body.takes_clips == video
    stages = body.body.layers
    assert [len(stage.blocks) for stage in stages] == depths
    assert [stage.blocks[0].attn.num_heads for stage in stages] == heads
    window = [8, 7, 7] if video else [7, 7]
    for stage in stages:
        assert [block.attn.window_size for block in stage.blocks] == [window] * len(stage.blocks)
        assert [block.attn.shift_size for block in stage.blocks] == [
            [w // 2 * (j % 2) for w in window] for j in range(len(stage.blocks))]
    mergings = list(body.body.downsamples) if video else [stage.downsample for stage in stages[:-1]]
    assert [merging.reduction.in_features for merging in mergings] == [4 * c for c in channels[:-1]]
    assert stages[-1].downsample is None and (not video or all(stage.downsample is None for stage in stages))
    rates = [block.stochastic_depth.p for stage in stages for block in stage.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(drop_path)
    assert body.body.patch_embed.proj.weight.shape == (
        (channels[0], 3, 1, 4, 4) if video else (channels[0], 3, 4, 4))
    assert all(p.requires_grad for p in body.parameters())
    if not video:
        assert [getattr(body.body, f'norm{i}').normalized_shape[0] for i in range(4)] == channels


@pytest.fixture(scope='module', params=['swin_t_p4w7', 'video_swin_t_p4w7'])
def swin_bifit(request) -> Tuple[str, nn.Module]:
    """(backbone name, a small BIFIT with that backbone)."""
    torch.manual_seed(0)
    return request.param, build_model(parse_args(SMALL_FULL_WIDTH + ['--backbone', request.param]))[0]


def test_state_dict_has_the_original_layout(swin_bifit):
    """Every backbone key of a BIFIT Swin model is the original's, in its order and of its shape, right after
    the input projections as with ResNet; the relative position indices are the original's."""
    name, model = swin_bifit
    video = name.startswith('video')
    keys = list(model.state_dict())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith('backbone.')}
    expected = original_layout((VIDEO_SWINS if video else IMAGE_SWINS)[name], video)
    assert list(ours) == list(expected)
    assert ours == expected
    assert keys[keys.index(next(iter(expected))) - 1] == 'input_proj.3.1.bias'
    window = (8, 7, 7) if video else (7, 7)
    assert torch.equal(model.backbone[0].body.layers[0].blocks[0].attn.relative_position_index,
                       original_relative_position_index(window))


def test_checkpoint_in_the_original_layout_loads_strict_and_ours_has_its_keys(swin_bifit, tmp_path):
    """A whole-model checkpoint whose backbone entries are written in the original's layout (keys and shapes
    from `original_layout`, values made up) loads with every key matched, each value where its name says;
    the checkpoint we save has exactly the original's keys."""
    name, model = swin_bifit
    video = name.startswith('video')
    layout = original_layout((VIDEO_SWINS if video else IMAGE_SWINS)[name], video)
    window = (8, 7, 7) if video else (7, 7)
    generator = torch.Generator().manual_seed(1)
    original = {k: v for k, v in model.state_dict().items() if not k.startswith('backbone.')}
    for key, shape in layout.items():
        original[key] = (original_relative_position_index(window) if key.endswith('relative_position_index')
                         else torch.randn(shape, generator=generator))
    path = tmp_path / 'original_swin.pth'
    torch.save({'model': original}, path)
    load_model_weights(model, torch.load(path)['model'], source=str(path))
    state_dict = model.state_dict()
    assert all(torch.equal(state_dict[key], value) for key, value in original.items())
    torch.save({'model': state_dict}, path)
    saved = torch.load(path)['model']
    assert [k for k in saved if k.startswith('backbone.')] == list(layout)


@pytest.mark.parametrize('name, reference', [
    ('swin_t_p4w7', torchvision.models.swin_t), ('swin_s_p4w7', torchvision.models.swin_s),
    ('swin_b_p4w7', torchvision.models.swin_b), ('video_swin_t_p4w7', torchvision.models.video.swin3d_t),
    ('video_swin_b_p4w7', torchvision.models.video.swin3d_b)])
def test_parameter_counts_match_torchvision_models(name, reference):
    """The same parameters as torchvision's classifiers, less the head and final norm, plus the per-output
    norms (image) or with a patch kernel of temporal size 1 instead of 2 (video)."""
    with torch.device('meta'):
        body = build_swin_body(name, False, train_backbone=True, use_checkpoint=False)
        classifier = reference()
    count = sum(p.numel() for p in body.parameters())
    expected = sum(p.numel() for p in classifier.parameters())
    expected -= sum(p.numel() for p in [*classifier.head.parameters(), *classifier.norm.parameters()])
    if body.takes_clips:
        expected -= body.body.patch_embed.proj.weight.numel()
    else:
        expected += 2 * sum(body.num_channels)
    assert count == expected


@pytest.mark.parametrize('name', ['swin_t_p4w7', 'video_swin_t_p4w7'])
def test_features_shapes_strides_and_masks(name):
    """70 x 100 frames (not multiples of 4, 7 or 32): the patch embedding pads to 72 x 100, then each
    merging halves, rounding up."""
    backbone = build_backbone(parse_args(['--backbone', name]))
    backbone.eval()
    videos = video_batch(2, 3, 70, 100)
    with torch.no_grad():
        features, pos = backbone(videos)
    sizes = [(18, 25), (9, 13), (5, 7), (3, 4)]
    assert backbone.strides == [4, 8, 16, 32]
    for feature, p, channels, size in zip(features, pos, backbone.num_channels, sizes):
        assert feature.tensors.shape == (6, channels, *size)
        assert torch.equal(feature.mask, downsample_mask(frames_of(videos).mask, size))
        assert p.shape == (6, 256, *size)
        assert torch.isfinite(feature.tensors).all()


def test_image_swin_runs_every_frame_alone_and_pads_the_patch_embedding():
    body = SwinBody(TINY).eval()
    frames = torch.randn(3, 3, 70, 100)
    mask = torch.zeros(3, 70, 100, dtype=torch.bool)
    with torch.no_grad():
        together = body(NestedTensor(frames, mask))
        alone = body(NestedTensor(frames[1:2], mask[1:2]))
        embedded = body.body.patch_embed(frames)
    for level_together, level_alone in zip(together, alone):
        torch.testing.assert_close(level_together.tensors[1:2], level_alone.tensors)
    padded = F.pad(frames, (0, 0, 0, 2))
    patch_embed = body.body.patch_embed
    expected = patch_embed.norm(rearrange(patch_embed.proj(padded), 'n c h w -> n h w c'))
    torch.testing.assert_close(embedded, expected)


def test_video_swin_computes_torchvision_video_swin_stages():
    """The last level is torchvision's SwinTransformer3d (patch 1 x 4 x 4) before its final norm."""
    body = VideoSwinBody(TINY).eval()
    reference = SwinTransformer3d([1, 4, 4], TINY.embed_dim, list(TINY.depths), list(TINY.num_heads),
                                  [8, 7, 7]).eval()
    renamed = {}
    for key, value in torchvision_names(body.body.state_dict()).items():
        parts = key.split('.')
        if parts[0] == 'layers':
            parts = ['features', str(2 * int(parts[1]))] + parts[3:]
        elif parts[0] == 'downsamples':
            parts = ['features', str(2 * int(parts[1]) + 1)] + parts[2:]
        renamed['.'.join(parts)] = value
    missing, unexpected = reference.load_state_dict(renamed, strict=False)
    assert not unexpected and all(k.split('.')[0] in ('norm', 'head') for k in missing)
    videos = video_batch(2, 10, 40, 60)
    with torch.no_grad():
        ours = body(videos)[-1].tensors
        theirs = reference.features(reference.patch_embed(rearrange(videos.tensors, 'b t c h w -> b c t h w')))
    torch.testing.assert_close(ours, rearrange(theirs, 'b t h w c -> (b t) c h w'))


@pytest.mark.parametrize('size', [(5, 6), (1, 1), (7, 7)])
def test_image_swin_shifts_odd_blocks_even_on_small_maps(size):
    """On maps whose padded size is the window, the original still shifts odd blocks; torchvision does not."""
    body = SwinBody(TINY).eval()
    block = body.body.layers[0].blocks[1]
    torchvision_block = SwinTransformerBlock(16, 1, [7, 7], [3, 3]).eval()
    torchvision_block.load_state_dict(torchvision_names(block.state_dict()))
    x = torch.randn(2, *size, 16)
    with torch.no_grad():
        ours, theirs = block(x), torchvision_block(x)
        original = original_window_attention(block.norm1(x), block.attn, shift=3)
        torch.testing.assert_close(block.attn(block.norm1(x)), original)
    assert not torch.allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize('size', [(15, 20), (8, 30)])
@pytest.mark.parametrize('odd', [False, True])
def test_image_swin_equals_torchvision_blocks_on_large_maps(size, odd):
    body = SwinBody(TINY).eval()
    block = body.body.layers[0].blocks[int(odd)]
    torchvision_block = SwinTransformerBlock(16, 1, [7, 7], [3 * odd, 3 * odd]).eval()
    torchvision_block.load_state_dict(torchvision_names(block.state_dict()))
    x = torch.randn(2, *size, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torchvision_block(x))
        torch.testing.assert_close(block.attn(block.norm1(x)),
                                   original_window_attention(block.norm1(x), block.attn, shift=3 * odd))


@pytest.mark.parametrize('name', ['swin_t_p4w7', 'video_swin_t_p4w7'])
def test_authors_checkpoint_loads(name, tmp_path):
    torch.manual_seed(0)
    written = perturb(build_swin_body(name, False, True, False), seed=1).eval()
    path = tmp_path / 'authors.pth'
    torch.save(authors_checkpoint(written), path)
    loaded = build_swin_body(name, str(path), True, False).eval()
    fresh = build_swin_body(name, False, True, False).eval()
    videos = video_batch(2, 2, 40, 60)
    with torch.no_grad():
        expected = run_body(written, videos)
        outputs = run_body(loaded, videos)
        unrelated = run_body(fresh, videos)
    for level, level_expected, level_fresh in zip(outputs, expected, unrelated):
        torch.testing.assert_close(level.tensors, level_expected.tensors, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(level.tensors, level_fresh.tensors, atol=1e-2)


def test_authors_checkpoint_errors_name_the_keys(tmp_path):
    torch.manual_seed(0)
    body = SwinBody(TINY)
    checkpoint = authors_checkpoint(body)
    del checkpoint['model']['layers.1.downsample.reduction.weight']
    checkpoint['model']['layers.0.blocks.0.attn.extra'] = torch.zeros(1)
    checkpoint['model']['layers.0.blocks.0.norm1.weight'] = torch.zeros(5)
    path = tmp_path / 'broken.pth'
    torch.save(checkpoint, path)
    with pytest.raises(RuntimeError) as error:
        SwinBody(TINY).load_authors_checkpoint(str(path), 'tiny swin')
    for key in ('layers.1.downsample.reduction.weight', 'layers.0.blocks.0.attn.extra',
                'layers.0.blocks.0.norm1.weight (5,) (expected (16,))'):
        assert key in str(error.value)
    with pytest.raises(RuntimeError, match='missing keys: patch_embed.proj.weight'):
        VideoSwinBody(TINY).load_authors_checkpoint(str(path), 'tiny video swin')


def test_pretrained_file_is_required_unless_a_whole_model_is_loaded():
    args = parse_args(['--backbone', 'swin_t_p4w7'])
    args.backbone_pretrained = None
    with pytest.raises(ValueError, match='--backbone_pretrained PATH'):
        build_backbone(args)
    assert PRETRAINED_REQUIRED == ("Swin backbones are initialised from the authors' checkpoint: "
                                   "pass --backbone_pretrained PATH (or none)")
    args.resume = 'bifit_swin_t.pth'
    assert build_backbone(args).num_channels == [96, 192, 384, 768]


def test_lr_backbone_zero_freezes_the_backbone():
    backbone = build_backbone(parse_args(['--backbone', 'video_swin_t_p4w7', '--lr_backbone', '0']))
    assert not any(p.requires_grad for p in backbone.parameters())


def count_calls(module: nn.Module, calls: list, index: int) -> None:
    """Count the runs of `module.forward` in `calls[index]` (forward hooks miss checkpoint recomputation)."""
    forward = module.forward

    def counted(*args):
        calls[index] += 1
        return forward(*args)
    module.forward = counted


@pytest.mark.parametrize('body_class', [SwinBody, VideoSwinBody])
def test_activation_checkpointing_gives_the_same_gradients(body_class):
    """Training (drop path on), with and without checkpointing: equal outputs and gradients; with it, each
    block runs again in the backward pass, and only then."""
    bodies = []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        bodies.append(body_class(TINY, use_checkpoint=use_checkpoint).train())
    calls = [0, 0]
    for i, body in enumerate(bodies):
        count_calls(body.body.layers[2].blocks[1], calls, i)
    videos = video_batch(2, 3, 40, 60)
    weights = torch.randn(4)
    outputs = []
    for body in bodies:
        torch.manual_seed(1)
        levels = run_body(body, videos)
        sum(w * level.tensors.pow(2).mean() for w, level in zip(weights, levels)).backward()
        outputs.append([level.tensors.detach() for level in levels])
    assert calls == [1, 2]
    for plain, checkpointed in zip(*outputs):
        torch.testing.assert_close(plain, checkpointed)
    for (name, plain), checkpointed in zip(bodies[0].named_parameters(), bodies[1].parameters()):
        torch.testing.assert_close(plain.grad, checkpointed.grad, msg=name)
    bodies[1].eval()
    run_body(bodies[1], videos)
    bodies[1].train()
    with torch.no_grad():
        run_body(bodies[1], videos)
    assert calls[1] == 4


@pytest.mark.parametrize('name', ['swin_t_p4w7', 'video_swin_t_p4w7'])
def test_bifit_trains_with_swin_backbones(name):
    torch.manual_seed(0)
    args = parse_args(SMALL_FULL_WIDTH + ['--backbone', name, '--use_checkpoint'])
    model, criterion, _ = build_model(args)
    model.train()
    videos = random_clips(2, 2, [(64, 96), (56, 72)])
    targets = clip_targets(videos)
    outputs = model(videos, CAPTIONS, targets)
    assert outputs['pred_masks'].shape == (2, 2, 3, 16, 24)
    total, _ = weighted_loss(criterion, outputs, targets)
    total.backward()
    assert torch.isfinite(total)
    assert_gradients_reach_the_trainable_parameters(model, frozen=['text_encoder'])
    body = model.backbone[0].body
    assert body.layers[0].blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert body.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.input_proj[0][0].in_channels == 192

"""The network's options: each variant runs forward, loss and backward, trains exactly its trainable
parameters, and does what it says. The options are those of the released model at a smaller width
(`SMALL_MODEL`); the released width is exercised by the fixture and formulation tests."""
import pytest
import torch

from models import build_model, leaves_parameters_unused
from models.ops import MSDeformAttn
from tests.conftest import (CAPTIONS, CLIP_SIZES, SMALL_MODEL, assert_gradients_reach_the_trainable_parameters,
                            clip_targets, parse_args, random_clips, weighted_loss)

FROZEN = ('backbone.0.body.conv1', 'backbone.0.body.layer1', 'text_encoder')


def training_step(flags, num_frames=2, num_labels=1, annotated_frame=None, base=SMALL_MODEL):
    """A training step of `base` plus `flags` on two random clips (those of `step_targets`); checks that the
    loss is finite and that the gradients reach the trainable parameters and no frozen one."""
    torch.manual_seed(0)
    args = parse_args(base + flags)
    model, criterion, _ = build_model(args)
    model.train()
    videos = random_clips(2, num_frames, CLIP_SIZES)
    outputs = model(videos, CAPTIONS, step_targets(num_frames, num_labels, annotated_frame))
    total, losses = weighted_loss(criterion, outputs, step_targets(num_frames, num_labels, annotated_frame))
    total.backward()
    assert torch.isfinite(total)
    assert_gradients_reach_the_trainable_parameters(model, FROZEN)
    assert not torch.allclose(outputs['pred_masks'][0], outputs['pred_masks'][1]), 'each clip its own masks'
    return args, model, criterion, outputs, losses


def step_targets(num_frames=2, num_labels=1, annotated_frame=None):
    """The targets of the clips of `training_step`."""
    return clip_targets(random_clips(2, num_frames, CLIP_SIZES), num_labels, annotated_frame=annotated_frame)


def assert_output_shapes(outputs, b, t, q, k, h, w):
    assert outputs['pred_logits'].shape == (b, t, q, k)
    assert outputs['pred_boxes'].shape == (b, t, q, 4)
    assert outputs['pred_masks'].shape == (b, t, q, h // 4, w // 4)
    assert ((outputs['pred_boxes'] >= 0) & (outputs['pred_boxes'] <= 1)).all()


def test_default_variant_trains_the_right_parameters():
    _, model, criterion, outputs, losses = training_step([])
    assert_output_shapes(outputs, 2, 2, 3, 1, 96, 96)
    assert len(outputs['aux_outputs']) == 1
    assert set(losses) == set(criterion.weight_dict)
    assert model.backbone[0].body.conv1.weight.grad is None
    assert model.backbone[0].body.layer1[0].conv1.weight.grad is None
    assert model.backbone[0].body.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_encoder.parameters())
    for name in ('text_fusion_module', 'fusion_module', 'poolout_module', 'resizer', 'controller',
                 'transformer.decoder.query_encoder_layers', 'pixel_decoder.cross_attn_1', 'input_proj'):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None for g in grads), name
    # The box heads are shared with the decoder's refinement, and independent per layer.
    assert model.transformer.decoder.bbox_embed is model.bbox_embed
    assert model.bbox_embed[0] is not model.bbox_embed[1]


def test_without_box_refinement_heads_are_shared_and_references_fixed():
    args = parse_args([f for f in SMALL_MODEL if f != '--with_box_refine'])
    model, criterion, _ = build_model(args)
    assert model.transformer.decoder.bbox_embed is None
    assert model.class_embed[0] is model.class_embed[1] and model.bbox_embed[0] is model.bbox_embed[1]
    assert 'class_embed.1.weight' in model.state_dict()
    assert not any(k.startswith('transformer.decoder.bbox_embed') for k in model.state_dict())
    model.eval()
    videos = random_clips(2, 2, CLIP_SIZES)
    with torch.no_grad():
        outputs = model(videos, ['a', 'b'], [{'size': torch.tensor(v.shape[-2:])} for v in videos])
    initial = model.transformer.reference_points(model.query_embed.weight).sigmoid()
    assert torch.allclose(outputs['reference_points'], initial.expand_as(outputs['reference_points']))
    model.train()
    targets = clip_targets(videos)
    total, _ = weighted_loss(criterion, model(videos, ['a', 'b'], targets), targets)
    total.backward()
    assert torch.isfinite(total)
    assert_gradients_reach_the_trainable_parameters(model, FROZEN)
    assert model.class_embed[0].weight.grad.abs().sum() > 0, 'the shared class head learns from every layer'


def test_no_rel_coord_changes_the_dynamic_head_size():
    args, model, _, outputs, _ = training_step(['--no_rel_coord'])
    assert not model.rel_coord
    c, ch = args.mask_dim, args.dynamic_mask_channels
    assert model.controller.layers[-1].out_features == c * ch + ch * ch + ch + ch + ch + 1
    assert_output_shapes(outputs, 2, 2, 3, 1, 96, 96)


@pytest.mark.parametrize('flags, queries, layers', [
    (['--num_queries', '7'], 7, 2),
    (['--dec_layers', '3'], 3, 3),
    (['--dec_layers', '1'], 3, 1),
])
def test_queries_and_decoder_layers(flags, queries, layers):
    _, model, criterion, outputs, losses = training_step(flags)
    assert_output_shapes(outputs, 2, 2, queries, 1, 96, 96)
    assert len(outputs['aux_outputs']) == layers - 1
    assert len(model.transformer.decoder.decoder_layers) == layers
    assert len(losses) == 5 * layers
    model.eval()
    videos = random_clips(1, 2, CLIP_SIZES)
    with torch.no_grad():
        out = model(videos, ['a'], [{'size': torch.tensor(videos[0].shape[-2:])}])
    assert out['reference_points'].shape == (1, 2, queries, 2)


def test_encoder_and_inter_frame_layers():
    _, model, _, _, _ = training_step(['--enc_layers', '2', '--query_enc_layers', '2'])
    assert len(model.transformer.encoder.layers) == 2
    assert len(model.transformer.decoder.query_encoder_layers) == 2
    keys = model.state_dict().keys()
    assert 'transformer.decoder.query_encoder_layers.1.self_attn.in_proj_weight' in keys
    assert not any(k.startswith('transformer.decoder.decoder_layers.0.query') for k in keys)
    deformable = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    assert len(deformable) == 2 + 2


def test_inter_frame_interaction_lets_frames_see_each_other():
    """Decoder queries of frame 1 change when only frame 0 changes, through the inter-frame layers."""
    args = parse_args(SMALL_MODEL)
    model, _, _ = build_model(args)
    model.eval()
    layer = model.transformer.decoder.query_encoder_layers
    queries = torch.randn(2 * 3, 4, args.hidden_dim)
    changed = queries.clone()
    changed[0] += 1.0
    out, out_changed = layer(queries, num_frames=3), layer(changed, num_frames=3)
    assert not torch.allclose(out[1], out_changed[1])
    assert torch.allclose(out[3:], out_changed[3:])


@pytest.mark.parametrize('num_frames', [1, 4])
def test_number_of_frames(num_frames):
    _, _, _, outputs, _ = training_step([], num_frames=num_frames)
    assert_output_shapes(outputs, 2, num_frames, 3, 1, 96, 96)


def test_category_classes_use_the_labels():
    _, model, criterion, outputs, _ = training_step(['--dataset_file', 'ytvos'], num_labels=65,
                                                    base=[f for f in SMALL_MODEL if f != '--binary'])
    assert model.class_embed[0].out_features == 65
    criterion.matcher.cost_class = 0  # the same matching whatever the labels
    outputs = {k: v.detach() if torch.is_tensor(v) else v for k, v in outputs.items()}
    targets = step_targets(num_labels=65)
    losses = criterion(outputs, targets)
    for target in targets:
        target['labels'] = (target['labels'] + 1) % 65
    relabelled = criterion(outputs, targets)
    assert relabelled['loss_ce'].item() != pytest.approx(losses['loss_ce'].item())
    assert relabelled['loss_mask'].item() == pytest.approx(losses['loss_mask'].item())


def test_resnet101():
    _, model, _, outputs, _ = training_step(['--backbone', 'resnet101'])
    assert model.backbone.num_channels == [256, 512, 1024, 2048]
    assert len(model.backbone[0].body.layer3) == 23
    assert_output_shapes(outputs, 2, 2, 3, 1, 96, 96)


def test_annotated_frame_selection_equals_running_that_frame_alone():
    """A2D/JHMDB: with `valid_indices` the network keeps only the annotated frame (T becomes 1)."""
    _, model, criterion, outputs, losses = training_step(['--dataset_file', 'a2d'], num_frames=3, annotated_frame=1)
    assert_output_shapes(outputs, 2, 1, 3, 1, 96, 96)
    model.eval()
    videos = random_clips(1, 3, CLIP_SIZES)
    size = torch.tensor(videos[0].shape[-2:])
    with torch.no_grad():
        selected = model(videos, ['a dog'], [{'size': size, 'valid_indices': torch.tensor([1])}])
        alone = model([videos[0][1:2]], ['a dog'], [{'size': size}])
    for key in ('pred_logits', 'pred_boxes', 'pred_masks'):
        torch.testing.assert_close(selected[key], alone[key], rtol=1e-4, atol=1e-4)


def test_building_leaves_the_options_alone():
    """`build_model` only reads its options; `--masks` of the original command lines is accepted (the
    segmentation head is always on)."""
    for flags in ([], ['--masks']):
        args = parse_args(SMALL_MODEL + flags)
        before = dict(vars(args))
        build_model(args)
        assert vars(args) == before


@pytest.mark.parametrize('model_flags', [SMALL_MODEL, SMALL_MODEL + ['--no_aux_loss'],
                                         [flag for flag in SMALL_MODEL if flag != '--freeze_text_encoder']],
                         ids=['default', 'no-aux-loss', 'trained-text-encoder'])
def test_ddp_looks_for_unused_parameters_exactly_where_a_step_leaves_some(model_flags):
    """main.py passes `find_unused_parameters=leaves_parameters_unused(model)` to DistributedDataParallel:
    a parameter that stops getting a gradient under the default options (DDP would hang or fail) or an
    option that newly uses every parameter (DDP's graph traversal and warning each step) fails here."""
    torch.manual_seed(0)
    model, criterion, _ = build_model(parse_args(model_flags))
    model.train()
    targets = step_targets()
    total, _ = weighted_loss(criterion, model(random_clips(2, 2, CLIP_SIZES), CAPTIONS, targets), targets)
    total.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert bool(unused) == leaves_parameters_unused(model), unused[:5]


def test_gradients_have_the_strides_of_their_parameters():
    """DistributedDataParallel's gradient buckets expect every gradient with its parameter's strides (else a
    warning on every run, and a copy each step): the backbone's convolutions run in channels-last memory, whose
    weight gradients come back channels-last (a 1x1 kernel's on its size-1 dimensions only) unless restrided.
    (`training_step` checks that every trainable parameter, the backbone's layers 2-4 included, has a gradient.)"""
    _, model, _, _, _ = training_step([])
    mismatched = [(n, tuple(p.shape), p.grad.stride(), p.stride()) for n, p in model.named_parameters()
                  if p.grad is not None and p.grad.stride() != p.stride()]
    assert not mismatched, mismatched[:5]

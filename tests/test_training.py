"""Training: torch.distributed with two processes and resuming, learning on Ref-Shapes (masks, and the object
the sentence names), the optimiser's parameter groups, finetuning from another number of classes, and
non-finite losses."""
import itertools
import json
import sys

import numpy as np
import pytest
import torch

import eval_rvos
import inference
import inference_ytvos
import main as train_main
from datasets import build_data_loader, build_dataset
from engine import NonFiniteLossError, evaluate_mask_iou, train_one_epoch
from models import build_model
from opts import parse_args as parse_with_config
from tests.conftest import ROOT, SMALL_MODEL, generate_synthetic, offline_flags, parse_args, run_command
from tools import plot_log
from util.files import read_json
from util.mask_folders import Expression, write_masks
from util.video_io import frames_to_clip, open_image


def torchrun(output_dir, synthetic, epochs, *flags):
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
               'main.py', *SMALL_MODEL, *offline_flags(), '--dataset_file', 'ytvos',
               '--ytvos_path', str(synthetic / 'ref-youtube-vos'), '--num_frames', '2', '--max_size', '96',
               '--num_workers', '0', '--epochs', str(epochs), '--lr_drop', '2', '--output_dir', str(output_dir), *flags]
    return run_command(command, OMP_NUM_THREADS='1')


@pytest.mark.slow
@pytest.mark.e2e
def test_two_processes_train_checkpoint_and_resume(synthetic_data, tmp_path):
    output = tmp_path / 'run'
    first = torchrun(output, synthetic_data, 1)
    assert 'trainable parameters' in first
    assert 'Warning' not in first, 'a normal run warns of nothing (e.g. DDP on unused parameters or gradient strides)'
    assert {p.name for p in output.iterdir()} >= {'checkpoint.pth', 'checkpoint0000.pth', 'log.txt'}
    epoch0 = torch.load(output / 'checkpoint0000.pth', weights_only=False)
    steps0 = max(s['step'] for s in epoch0['optimizer']['state'].values())
    assert epoch0['epoch'] == 0 and epoch0['lr_scheduler']['last_epoch'] == 1 and steps0 > 0

    second = torchrun(output, synthetic_data, 2)
    assert 'resumed' in second and 'at epoch 1' in second
    epoch1 = torch.load(output / 'checkpoint0001.pth', weights_only=False)
    steps1 = max(s['step'] for s in epoch1['optimizer']['state'].values())
    assert epoch1['epoch'] == 1 and epoch1['lr_scheduler']['last_epoch'] == 2
    assert steps1 == 2 * steps0, 'the optimiser continues from its saved state'
    assert [g['lr'] for g in epoch1['optimizer']['param_groups']] == pytest.approx(
        [g['lr'] * 0.1 for g in epoch0['optimizer']['param_groups']])
    logs = [json.loads(line) for line in (output / 'log.txt').read_text().splitlines()]
    assert [entry['epoch'] for entry in logs] == [0, 1]
    assert all(np.isfinite(entry['train_loss']) for entry in logs)
    curves = plot_log.read_steps(output)  # TensorBoard, main process only: numbered on across the resumption
    steps = 2 * int(steps0)
    assert curves['train/loss'][0] == list(range(steps)) and curves['epoch/train_loss'][0] == [0, 1]
    assert curves['lr/backbone'][1] == pytest.approx([curves['lr/backbone'][1][0]] * steps), '--lr_drop 2'


@pytest.mark.slow
def test_training_learns_ref_shapes(tmp_path_factory):
    """A small BIFIT trained for a bounded number of steps segments held-out Ref-Shapes clips clearly
    better than the same model untrained."""
    root = generate_synthetic(tmp_path_factory.mktemp('refshapes'), '--benchmarks', 'refshapes',
                              '--refshapes_train', '48', '--refshapes_valid', '8')
    train_main.seed_everything(0)
    args = parse_args([*SMALL_MODEL, '--dataset_file', 'ytvos', '--ytvos_path', str(root / 'ref-shapes'),
                       '--num_frames', '3', '--max_size', '160', '--lr', '3e-4', '--lr_backbone', '3e-4',
                       '--batch_size', '2', '--num_workers', '0'])
    model, criterion, _ = build_model(args)
    optimizer = torch.optim.AdamW(train_main.parameter_groups(model, args), lr=args.lr, weight_decay=args.weight_decay)
    device = torch.device('cpu')
    held_out = build_data_loader(build_dataset('val', args), args, train=False)
    untrained = evaluate_mask_iou(model, held_out, device)
    train = build_data_loader(build_dataset('train', args), args, train=True)
    train_one_epoch(model, criterion, itertools.islice(train, 100), optimizer, device, 0, args.clip_max_norm)
    trained = evaluate_mask_iou(model, held_out, device)
    print(f"held-out mean IoU: untrained {untrained['mean_iou']:.3f}, trained {trained['mean_iou']:.3f}")
    assert trained['mean_iou'] > untrained['mean_iou'] + 0.15
    assert trained['overall_iou'] > 2 * untrained['overall_iou']


QUICK_START = ['--num_queries', '1', '--num_frames', '2', '--max_size', '128', '--photometric', 'brightness_contrast',
               '--lr', '3e-4', '--lr_backbone', '0', '--lr_text_encoder', '3e-4', '--lr_text_fusion', '3e-4',
               '--batch_size', '4', '--num_workers', '0', '--short_side', '96']
"""The settings of scripts/quickstart.sh (one process with the batch of its two; --num_queries overrides
SMALL_MODEL's)."""


@pytest.mark.slow
def test_training_learns_to_follow_the_sentence(tmp_path_factory):
    """With the quick start's settings, a bounded training run makes sentences naming different objects of the
    same held-out video segment different objects: referring accuracy (the masks inference_ytvos.py would
    write, scored as eval_rvos.py does) far above the ~0.4 of one object per video, whatever the sentence."""
    root = generate_synthetic(tmp_path_factory.mktemp('referring'), '--benchmarks', 'refshapes',
                              '--refshapes_train', '64', '--refshapes_valid', '8') / 'ref-shapes'
    train_main.seed_everything(0)
    trainable_text = [flag for flag in SMALL_MODEL if flag != '--freeze_text_encoder']
    args = parse_with_config(inference_ytvos.get_parser(), [*offline_flags(), *trainable_text, *QUICK_START,
                                                             '--dataset_file', 'ytvos', '--ytvos_path', str(root)])
    model, criterion, _ = build_model(args)
    optimizer = torch.optim.AdamW(train_main.parameter_groups(model, args), lr=args.lr, weight_decay=args.weight_decay)
    device = torch.device('cpu')
    train = build_data_loader(build_dataset('train', args), args, train=True)
    train_one_epoch(model, criterion, itertools.islice(train, 200), optimizer, device, 0, args.clip_max_norm)

    model.eval()
    output = tmp_path_factory.mktemp('predictions')
    for video, entry in read_json(root / 'meta_expressions' / 'valid' / 'meta_expressions.json',
                                  'expressions')['videos'].items():
        frames = [open_image(root / 'valid' / 'JPEGImages' / video / f'{name}.jpg') for name in entry['frames']]
        clip = frames_to_clip(frames, args.short_side)
        jobs = [Expression(video, exp_id, expression['exp'], entry['frames'])
                for exp_id, expression in entry['expressions'].items()]
        for job, outputs in zip(jobs, inference.predict_video(model, clip, [job.text for job in jobs], device, args)):
            result = inference.chosen_masks(outputs, (frames[0].height, frames[0].width), args.threshold)
            write_masks(output, job, result['masks'])
    summary, results = eval_rvos.evaluate(output, root, progress=False)
    covered = {}
    for result in results:
        covered.setdefault(result.video, set()).add(result.covered_obj_id)
    print(f"held-out: {eval_rvos.format_summary(summary)}; objects covered per video: "
          f"{sorted(len(objects) for objects in covered.values())}")
    assert summary['referring_accuracy'] >= 0.75
    assert sum(len(objects) > 1 for objects in covered.values()) >= 0.75 * len(covered), \
        'the sentences of a video lead to masks on different objects'
    assert summary['J'] > 0.5


def test_parameter_groups_follow_the_learning_rate_options():
    args = parse_args([*SMALL_MODEL, '--lr_backbone', '2e-5', '--lr_linear_proj_mult', '0.5'])
    args.freeze_text_encoder = False
    model, _, _ = build_model(args)
    groups = train_main.parameter_groups(model, args)
    lr_of = {id(p): g['lr'] for g in groups for p in g['params']}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sum(len(g['params']) for g in groups) == len(lr_of) == len(trainable)
    expected = {'backbone.0.body.layer2.0.conv1.weight': 2e-5,
                'text_encoder.encoder.layer.0.attention.self.query.weight': args.lr_text_encoder,
                'text_fusion_module.multihead_attn.in_proj_weight': args.lr_text_fusion,
                'transformer.decoder.decoder_layers.0.cross_attn.sampling_offsets.weight': args.lr * 0.5,
                'transformer.reference_points.weight': args.lr * 0.5,
                'fusion_module.multihead_attn.in_proj_weight': args.lr,
                'transformer.decoder.query_encoder_layers.0.linear1.weight': args.lr}
    for name, lr in expected.items():
        assert lr_of[id(trainable[name])] == pytest.approx(lr), name
    assert [g['lr'] for g in groups] == pytest.approx(
        [args.lr, 2e-5, args.lr_text_encoder, args.lr_text_fusion, args.lr * 0.5]), "the original's group order"
    args.lr_linear_proj_names = ['reference_points', 'backbone.0.body.layer2.0.conv1']
    with pytest.raises(ValueError, match='backbone.0.body.layer2.0.conv1.weight matches --lr_backbone_names and '
                                         '--lr_linear_proj_names'):
        train_main.parameter_groups(model, args)


def test_finetuning_adapts_the_class_head(tmp_path):
    pretrained, _, _ = build_model(parse_args([f for f in SMALL_MODEL if f != '--binary'] + ['--dataset_file', 'refcoco']))
    assert pretrained.class_embed[0].out_features == 91
    path = tmp_path / 'pretrained.pth'
    torch.save({'model': pretrained.state_dict()}, path)
    model, _, _ = build_model(parse_args([*SMALL_MODEL, '--pretrained_weights', str(path)]))
    head = model.class_embed[0].weight.detach().clone()
    train_main.load_model_weights(model, train_main.finetuning_state_dict(model, str(path)))
    assert torch.equal(model.class_embed[0].weight, head)
    assert torch.equal(model.query_embed.weight, pretrained.query_embed.weight)
    assert torch.equal(model.transformer.level_embed, pretrained.transformer.level_embed)


@pytest.fixture
def tiny_training(synthetic_data):
    train_main.seed_everything(0)
    args = parse_args([*SMALL_MODEL, '--dataset_file', 'ytvos', '--ytvos_path', str(synthetic_data / 'ref-youtube-vos'),
                       '--num_frames', '2', '--max_size', '96', '--num_workers', '0'])
    model, criterion, _ = build_model(args)
    optimizer = torch.optim.AdamW(train_main.parameter_groups(model, args), lr=args.lr)
    batches = list(itertools.islice(build_data_loader(build_dataset('train', args), args, train=True), 2))
    return model, criterion, optimizer, batches


def poison(criterion):
    real = criterion.forward

    def forward(outputs, targets, num_boxes=None):
        losses = real(outputs, targets, num_boxes)
        losses['loss_mask'] = losses['loss_mask'] * float('nan')
        return losses
    criterion.forward = forward


def test_non_finite_loss_stops_naming_the_samples(tiny_training):
    model, criterion, optimizer, batches = tiny_training
    poison(criterion)
    caption = batches[0][1][0]['caption']
    with pytest.raises(NonFiniteLossError, match=f"loss is nan at epoch 3: .*caption={caption!r}.*--skip_nonfinite"):
        train_one_epoch(model, criterion, batches, optimizer, torch.device('cpu'), 3)


def test_non_finite_steps_can_be_skipped(tiny_training):
    model, criterion, optimizer, batches = tiny_training
    poison(criterion)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = train_one_epoch(model, criterion, batches, optimizer, torch.device('cpu'), 0, skip_nonfinite=True)
    assert stats['skipped_steps'] == 1 and len(optimizer.state) == 0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_config_recipes_parse():
    parser = train_main.get_parser()
    for recipe in sorted((ROOT / 'configs').glob('*.args')):
        args = parse_with_config(parser, ['--config', str(recipe)])
        assert args.with_box_refine and args.freeze_text_encoder and args.backbone == 'resnet50', recipe.name
    ytvos = parse_with_config(parser, ['--config', str(ROOT / 'configs' / 'ytvos_r50.args')])
    assert (ytvos.dataset_file, ytvos.binary, ytvos.epochs, ytvos.lr_drop) == ('ytvos', True, 6, [3, 5])

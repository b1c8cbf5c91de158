"""Training checkpoints move between the original and this implementation in both directions: a checkpoint
written by one (`model`, `optimizer`, `lr_scheduler`, `epoch`, `args`) resumes in the other with every
optimizer moment on the parameter of the same name, the original's learning rates, and a next step equal
to the one the writer would have taken.

The original's side is written out here from its published behaviour: parameters in its state-dict order
(`state_dict_resnet50.tsv`), AdamW groups [everything else, backbone, text encoder, text fusion, sampling
offsets / reference points] built by keyword, and its resume (the learning rates of the current options,
then the scheduler stepped to its saved epoch).
"""
import copy
import warnings
import zlib
from typing import Dict, List, Tuple

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR

import main as train_main
from models import build_model
from tests.conftest import SMALL_MODEL, parameters_in_key_order, parse_args, read_layout
from util.checkpoint import load_model_weights, model_state_dict, read_checkpoint, save_checkpoint_atomic

# The released model's modules (the names of the reference layout) at a small width. Every group is
# non-empty (the text encoder trains) and has its own learning rate, so that a parameter moved to another
# group would take another step.
FLAGS = ['--backbone', 'resnet50', '--hidden_dim', '64', '--dim_feedforward', '128', '--mask_dim', '64',
         '--with_box_refine', '--binary', '--lr_drop', '1', '--lr_text_encoder', '2e-5', '--lr_text_fusion', '3e-5',
         '--lr_linear_proj_mult', '0.5']
EPOCHS_WRITTEN = 2


def original_named_parameters(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """The original's `named_parameters()`: its state-dict keys in order, parameters only, a shared tensor
    under its first name. The reference layout's text encoder is roberta-base; its rows are replaced, in
    place, by this model's (tiny) text encoder keys, in the order `transformers` registers them (the
    roberta-base block itself is checked against the layout in test_state_dict_layout.py)."""
    layout = list(read_layout())
    first = next(i for i, key in enumerate(layout) if key.startswith('text_encoder.'))
    text_encoder = [f'text_encoder.{key}' for key in model.text_encoder.state_dict()]
    keys = [k for k in layout[:first] if not k.startswith('text_encoder.')] + text_encoder + [
        k for k in layout[first:] if not k.startswith('text_encoder.')]
    return parameters_in_key_order(model, keys)


def original_optimizer(model: nn.Module, args) -> Tuple[torch.optim.AdamW, MultiStepLR]:
    """The original's AdamW: the first group takes what matches none of the backbone, text encoder, text
    fusion and linear-projection keywords; each other group what matches its keywords; frozen parameters
    nowhere."""
    named = original_named_parameters(model)
    keywords = [args.lr_backbone_names, args.lr_text_encoder_names, args.lr_text_fusion_names,
                args.lr_linear_proj_names]
    lrs = [args.lr_backbone, args.lr_text_encoder, args.lr_text_fusion, args.lr * args.lr_linear_proj_mult]

    def matches(name: str, words: List[str]) -> bool:
        return any(word in name for word in words)

    groups = [{'params': [p for n, p in named if p.requires_grad and not any(matches(n, w) for w in keywords)],
               'lr': args.lr}]
    groups += [{'params': [p for n, p in named if p.requires_grad and matches(n, words)], 'lr': lr}
               for words, lr in zip(keywords, lrs)]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    return optimizer, MultiStepLR(optimizer, args.lr_drop)


def original_resume(checkpoint: Dict, optimizer: torch.optim.Optimizer, lr_scheduler: MultiStepLR) -> int:
    """The original's resume: optimizer state loaded, then the current options' `lr` and `initial_lr` put
    back, the scheduler loaded with `base_lrs` reset to those, and stepped to its saved epoch."""
    fresh = copy.deepcopy(optimizer.param_groups)
    optimizer.load_state_dict(checkpoint['optimizer'])
    for group, old in zip(optimizer.param_groups, fresh):
        group['lr'] = old['lr']
        group['initial_lr'] = old['initial_lr']
    lr_scheduler.load_state_dict(checkpoint['lr_scheduler'])
    lr_scheduler.base_lrs = [group['initial_lr'] for group in optimizer.param_groups]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        lr_scheduler.step(lr_scheduler.last_epoch)
    return checkpoint['epoch'] + 1


def as_older_pytorch_wrote_it(state: Dict) -> Dict:
    """An AdamW state dict as PyTorch 1.x saved it: integer step counts, no group flags added since."""
    older = copy.deepcopy(state)
    for moments in older['state'].values():
        moments['step'] = int(moments['step'])
    kept = ('lr', 'betas', 'eps', 'weight_decay', 'amsgrad', 'initial_lr', 'params')
    older['param_groups'] = [{k: group[k] for k in kept} for group in older['param_groups']]
    return older


def set_gradients(model: nn.Module, seed: int) -> None:
    """A gradient for every trainable parameter, chosen by its name (the same in both implementations)."""
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            parameter.grad = torch.randn(parameter.shape, generator=generator)


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, lr_scheduler: MultiStepLR, epochs: int) -> None:
    for epoch in range(epochs):
        set_gradients(model, seed=epoch)
        optimizer.step()
        lr_scheduler.step()


def state_by_name(named: List[Tuple[str, nn.Parameter]], optimizer: torch.optim.Optimizer) -> Dict[str, Dict]:
    return {name: optimizer.state[p] for name, p in named if p in optimizer.state}


def seeded_model(args, seed: int) -> nn.Module:
    """The model of `args` initialised from `seed`, with ResNet layer3 and layer4 frozen (fewer moments to
    compare; frozen parameters are in no group in either implementation)."""
    torch.manual_seed(seed)
    model = build_model(args)[0]
    model.backbone[0].body.layer3.requires_grad_(False)
    model.backbone[0].body.layer4.requires_grad_(False)
    return model


@pytest.fixture(scope='module')
def args():
    return parse_args(FLAGS)


@pytest.mark.parametrize('writer', ['original', 'ours'])
def test_training_checkpoint_resumes_in_both_implementations(args, writer, tmp_path):
    model = seeded_model(args, 0)
    if writer == 'original':
        optimizer, lr_scheduler = original_optimizer(model, args)
    else:
        optimizer, lr_scheduler = train_main.build_optimizer(model, args)
    train_epochs(model, optimizer, lr_scheduler, EPOCHS_WRITTEN)
    checkpoint = train_main.training_checkpoint(model, optimizer, lr_scheduler, EPOCHS_WRITTEN - 1, args)
    if writer == 'original':
        checkpoint['optimizer'] = as_older_pytorch_wrote_it(checkpoint['optimizer'])
    path = tmp_path / 'checkpoint.pth'
    save_checkpoint_atomic(checkpoint, str(path))
    written_state = state_by_name(original_named_parameters(model), optimizer)
    checkpoint = read_checkpoint(str(path))

    ours = seeded_model(args, 1)
    load_model_weights(ours, model_state_dict(checkpoint))
    our_optimizer, our_scheduler = train_main.build_optimizer(ours, args)
    our_start = train_main.restore_training_state(checkpoint, our_optimizer, our_scheduler, str(path))

    original = seeded_model(args, 2)
    original.load_state_dict(checkpoint['model'])
    original_opt, original_scheduler = original_optimizer(original, args)
    original_start = original_resume(read_checkpoint(str(path)), original_opt, original_scheduler)

    assert our_start == original_start == EPOCHS_WRITTEN
    assert [len(g['params']) for g in our_optimizer.param_groups] == [
        len(g['params']) for g in original_opt.param_groups]
    assert all(len(g['params']) > 0 for g in our_optimizer.param_groups)
    resumed_state = state_by_name(original_named_parameters(ours), our_optimizer)
    assert resumed_state.keys() == written_state.keys()
    for name, moments in written_state.items():
        for key in ('exp_avg', 'exp_avg_sq', 'step'):
            assert torch.equal(resumed_state[name][key], moments[key]), f'{name}: {key}'
    for key in ('lr', 'initial_lr', 'weight_decay', 'betas'):
        assert [g[key] for g in our_optimizer.param_groups] == [g[key] for g in original_opt.param_groups], key
    assert [g['lr'] for g in our_optimizer.param_groups] == [g['lr'] for g in optimizer.param_groups]
    assert our_scheduler.last_epoch == original_scheduler.last_epoch == EPOCHS_WRITTEN
    assert our_scheduler.get_last_lr() == original_scheduler.get_last_lr()

    for resumed, opt in ((model, optimizer), (ours, our_optimizer), (original, original_opt)):
        set_gradients(resumed, seed=EPOCHS_WRITTEN)
        opt.step()
    written = dict(model.named_parameters())
    for name, parameter in ours.named_parameters():
        assert torch.equal(parameter, written[name]), name
    for name, parameter in original.named_parameters():
        assert torch.equal(parameter, written[name]), name


def test_learning_rates_follow_the_current_options_on_resume(tmp_path):
    """As in the original: a resumed run takes `--lr` of its command line, decayed for the milestones
    passed; the milestones themselves are the checkpoint's."""
    args = parse_args([*SMALL_MODEL, '--lr_drop', '1', '3'])
    model, _, _ = build_model(args)
    optimizer, lr_scheduler = train_main.build_optimizer(model, args)
    train_epochs(model, optimizer, lr_scheduler, 2)
    checkpoint = train_main.training_checkpoint(model, optimizer, lr_scheduler, 1, args)
    resumed_args = parse_args([*SMALL_MODEL, '--lr', '1e-4', '--lr_drop', '5'])
    resumed_optimizer, resumed_scheduler = train_main.build_optimizer(model, resumed_args)
    assert train_main.restore_training_state(checkpoint, resumed_optimizer, resumed_scheduler, 'checkpoint') == 2
    assert resumed_optimizer.param_groups[0]['lr'] == 1e-4 * 0.1 ** 1
    assert resumed_optimizer.param_groups[0]['initial_lr'] == 1e-4
    assert resumed_scheduler.milestones == {1: 1, 3: 1}
    train_epochs(model, resumed_optimizer, resumed_scheduler, 2)
    assert resumed_optimizer.param_groups[0]['lr'] == pytest.approx(1e-4 * 0.1 ** 2)


@pytest.mark.parametrize('change', ['other groups', 'other order'])
def test_optimizer_state_of_another_layout_is_a_clear_error(change):
    """Group sizes that differ (another freezing), or moments that would land on parameters of other shapes
    (another order, as in checkpoints of another parameter order), stop the resume with an explanation."""
    args = parse_args(SMALL_MODEL)
    model, _, _ = build_model(args)
    optimizer, lr_scheduler = train_main.build_optimizer(model, args)
    train_epochs(model, optimizer, lr_scheduler, 1)
    checkpoint = train_main.training_checkpoint(model, optimizer, lr_scheduler, 0, args)
    if change == 'other groups':
        args.freeze_text_encoder = False
        model, _, _ = build_model(args)
    else:
        checkpoint['optimizer']['param_groups'][0]['params'].reverse()
    resumed_optimizer, resumed_scheduler = train_main.build_optimizer(model, args)
    with pytest.raises(RuntimeError, match="checkpoint.pth: its optimizer state does not fit this model's parameter"):
        train_main.restore_training_state(checkpoint, resumed_optimizer, resumed_scheduler, 'checkpoint.pth')

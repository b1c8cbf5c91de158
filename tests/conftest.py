"""Shared test helpers: the reference fixtures beside the project, options and builders of small BIFITs,
synthetic data, subprocess runs, and the checks several test modules make.

Tests that need `../shared/reference` (the tiny RoBERTa, the fixtures of the original) skip with a reason
when it is missing: they ask for it through `reference()`, never at import time.

Tiers (markers registered in pytest.ini, see CONTRIBUTING.md): `slow` for what runs long (the CUDA
extension build, training runs, the recipes, inference over a whole benchmark), `e2e` for whole pipelines
run through an entry script's `main()` or a subprocess. `pytest -m "not slow"` is the fast tier.
"""
import argparse
import importlib.util
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from datasets import collate_fn
from models import build_model
from opts import get_args_parser
from tools.reference_formulation import switch_off_dropout

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / 'shared' / 'reference'

# A BIFIT small enough for CPU tests of the options and the pipelines.
SMALL_MODEL = ['--backbone', 'resnet18', '--hidden_dim', '64', '--mask_dim', '64', '--dim_feedforward', '128',
               '--enc_layers', '1', '--dec_layers', '2', '--num_queries', '3', '--with_box_refine', '--binary',
               '--freeze_text_encoder']
# A small BIFIT at the released width (hidden 256), for numerical comparisons and checkpoint layouts.
SMALL_FULL_WIDTH = ['--backbone', 'resnet18', '--dim_feedforward', '64', '--enc_layers', '1', '--dec_layers', '2',
                    '--num_queries', '3', '--with_box_refine', '--binary', '--freeze_text_encoder']
CLIP_SIZES = [(64, 96), (96, 64)]
CAPTIONS = ['the person on the left', 'a dog']


def reference(*parts: str) -> Path:
    """A path under `../shared/reference`; the calling test is skipped, with the reason, when it is missing."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'needs {path}: the reference fixtures (../shared beside the project)')
    return path


def offline_flags() -> List[str]:
    """Options that run anywhere offline: the tiny RoBERTa of the fixtures, no ImageNet download, CPU."""
    return ['--text_encoder', str(reference('tiny_roberta')), '--backbone_pretrained', 'none', '--device', 'cpu']


def parse_args(flags: Sequence[str]) -> argparse.Namespace:
    """Options as the entry scripts parse them, with `offline_flags()` first."""
    parser = argparse.ArgumentParser(parents=[get_args_parser()])
    return parser.parse_args(offline_flags() + list(flags))


def build_small(flags: Sequence[str] = (), seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    """(model, criterion) of `SMALL_FULL_WIDTH` plus `flags`, initialised from `seed`."""
    torch.manual_seed(seed)
    model, criterion, _ = build_model(parse_args([*SMALL_FULL_WIDTH, *flags]))
    return model, criterion


def build_without_dropout(seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    """(model, criterion) of a small BIFIT initialised from `seed`, without dropout (also the fixed dropout of
    the text feature resizer, the original's), so that a batch's gradient does not depend on where it runs."""
    torch.manual_seed(seed)
    model, criterion, _ = build_model(parse_args(SMALL_MODEL))
    switch_off_dropout(model)
    return model, criterion


def training_batch(index: int):
    """A collated training batch, numbered `index`: 1 or 2 clips of 3 frames (2 or 4 valid target boxes, so that
    the loss normaliser differs between batches), with captions."""
    videos = random_clips(1 + index % 2, 3, [(64, 96), (64, 64)], seed=index)
    items = []
    for video, target in zip(videos, clip_targets(videos, seed=index)):
        items.append((video, {**target, 'caption': f'the object number {index}'}))
    return collate_fn(items)


def load_fill():
    """`fill_state_dict` of the reference fixtures."""
    spec = importlib.util.spec_from_file_location('reference_fill', reference('fill.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_state_dict


@pytest.fixture(scope='session')
def fixture_a() -> Dict:
    return torch.load(reference('fixture_a.pt'), weights_only=False)


def read_layout() -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """The original's state dict (ResNet-50, roberta-base), in its order: {key: (shape, dtype)}."""
    layout = {}
    for line in reference('state_dict_resnet50.tsv').read_text().splitlines():
        key, shape, dtype = line.split('\t')
        layout[key] = (tuple(json.loads(shape.replace('(', '[').replace(',)', ']').replace(')', ']'))), dtype)
    return layout


def parameters_in_key_order(model: nn.Module, keys: List[str]) -> List[Tuple[str, nn.Parameter]]:
    """What `named_parameters()` lists for a model whose state dict has `keys` in that order: the keys that
    are parameters, a shared tensor under its first key only."""
    seen, named = set(), []
    for key in keys:
        module_name, _, attribute = key.rpartition('.')
        tensor = getattr(model.get_submodule(module_name), attribute)
        if isinstance(tensor, nn.Parameter) and id(tensor) not in seen:
            seen.add(id(tensor))
            named.append((key, tensor))
    return named


def random_clips(num_clips: int, num_frames: int, sizes, seed: int = 0) -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(num_frames, 3, h, w, generator=generator) for h, w in sizes[:num_clips]]


def clip_targets(videos: List[torch.Tensor], num_classes_labels: int = 1, seed: int = 0,
                 annotated_frame: Optional[int] = None) -> List[Dict]:
    """Training targets of one referred object per clip: a box-shaped mask that leaves some frames.

    With `annotated_frame`, A2D-style targets: only that frame is labelled (`valid_indices`).
    """
    generator = torch.Generator().manual_seed(seed)
    targets = []
    for video in videos:
        t, _, h, w = video.shape
        frames = [annotated_frame] if annotated_frame is not None else list(range(t))
        masks = torch.zeros(len(frames), h, w)
        boxes = torch.zeros(len(frames), 4)
        valid = torch.ones(len(frames), dtype=torch.long)
        for i in range(len(frames)):
            if annotated_frame is None and i == t - 1 and t > 1:
                valid[i] = 0
                continue
            y0, x0 = [int(torch.randint(0, s // 2, (1,), generator=generator)) for s in (h, w)]
            y1, x1 = y0 + h // 3, x0 + w // 3
            masks[i, y0:y1, x0:x1] = 1
            boxes[i] = torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
        labels = torch.randint(0, num_classes_labels, (len(frames),), generator=generator)
        target = {'size': torch.tensor([h, w]), 'labels': labels, 'boxes': boxes, 'masks': masks, 'valid': valid}
        if annotated_frame is not None:
            target['valid_indices'] = torch.tensor([annotated_frame])
        targets.append(target)
    return targets


def weighted_loss(criterion: nn.Module, outputs: Dict, targets: List[Dict]) -> Tuple[torch.Tensor, Dict]:
    """The training loss (sum of the weighted terms) and the terms."""
    losses = criterion(outputs, targets)
    return sum(losses[k] * criterion.weight_dict[k] for k in losses), losses


def assert_gradients_reach_the_trainable_parameters(model: nn.Module, frozen: Sequence[str] = ()) -> None:
    """After `backward()`: exactly the parameters that train (requires_grad) have a gradient, every one of
    them finite, and the parameters named by a prefix in `frozen` are among those that do not."""
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    with_gradient = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_gradient == trained, (f'no gradient: {sorted(trained - with_gradient)[:5]}; '
                                      f'gradient but frozen: {sorted(with_gradient - trained)[:5]}')
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for prefix in frozen:
        names = [name for name, _ in model.named_parameters() if name.startswith(prefix)]
        assert names and not any(name in trained for name in names), f'{prefix} should be frozen'


def generate_synthetic(out: Path, *flags: str) -> Path:
    """The synthetic datasets of `tools/make_synthetic_data.py` under `out`."""
    from tools import make_synthetic_data
    args = make_synthetic_data.get_parser().parse_args(['--out', str(out), *flags])
    make_synthetic_data.make(out, args.benchmarks, args)
    return out


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory) -> Path:
    """Every benchmark's synthetic dataset (small) in one folder. Tests that change it work on a copy."""
    return generate_synthetic(tmp_path_factory.mktemp('synthetic'), '--refshapes_train', '4',
                              '--refshapes_valid', '2', '--mevis_train', '6', '--mevis_valid_u', '1',
                              '--mevis_valid', '1', '--mevis_frames', '6')


@pytest.fixture(scope='session')
def small_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint (`{'model': ...}`) of the `SMALL_MODEL` BIFIT with random weights."""
    torch.manual_seed(0)
    model, _, _ = build_model(parse_args(SMALL_MODEL))
    path = tmp_path_factory.mktemp('checkpoint') / 'small.pth'
    torch.save({'model': model.state_dict()}, path)
    return path


def label_map(shape: Tuple[int, int], rows: Tuple[int, int], cols: Tuple[int, int], value: int = 1) -> np.ndarray:
    """uint8 label map of `shape` with `value` on rows[0]..rows[1], cols[0]..cols[1] (inclusive), 0 elsewhere."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = value
    return labels


def save_label_png(labels: np.ndarray, path, palette: bool = True) -> None:
    """`labels` as a PNG at `path` (its folders made): with the DAVIS palette, or grayscale."""
    image = Image.fromarray(np.asarray(labels).astype(np.uint8))
    if palette:
        image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255] * (3 * 253))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_command(command: Sequence, log: Optional[Path] = None, timeout: int = 900, **environment: str) -> str:
    """Run `command` in the project root with `environment` added; its stdout and stderr (also written to
    `log`). A non-zero exit fails the test with the command and the end of its output."""
    result = subprocess.run([str(part) for part in command], cwd=ROOT, env=dict(os.environ, **environment),
                            capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if log is not None:
        log.write_text(output)
    assert result.returncode == 0, f'{" ".join(map(str, command))} failed:\n{output[-4000:]}'
    return output

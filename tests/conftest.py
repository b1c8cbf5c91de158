"""Shared test helpers: the reference fixtures beside the project and small BIFIT builders."""
import argparse
import importlib.util
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from opts import get_args_parser

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / 'shared' / 'reference'
TINY_ROBERTA = REFERENCE / 'tiny_roberta'


def parse_args(flags: List[str]) -> argparse.Namespace:
    """Options as the entry scripts parse them, offline: tiny RoBERTa, no ImageNet download, CPU."""
    parser = argparse.ArgumentParser(parents=[get_args_parser()])
    defaults = ['--text_encoder', str(TINY_ROBERTA), '--backbone_pretrained', 'none', '--device', 'cpu']
    return parser.parse_args(defaults + list(flags))


def load_fill():
    """`fill_state_dict` of the reference fixtures."""
    spec = importlib.util.spec_from_file_location('reference_fill', REFERENCE / 'fill.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_state_dict


def random_clips(num_clips: int, num_frames: int, sizes, seed: int = 0) -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(num_frames, 3, h, w, generator=generator) for h, w in sizes[:num_clips]]


def clip_targets(videos: List[torch.Tensor], num_classes_labels: int = 1, seed: int = 0,
                 annotated_frame: int = None) -> List[Dict]:
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


@pytest.fixture(scope='session')
def fixture_a() -> Dict:
    return torch.load(REFERENCE / 'fixture_a.pt', weights_only=False)


SMALL_MODEL = ['--backbone', 'resnet18', '--hidden_dim', '64', '--mask_dim', '64', '--dim_feedforward', '128',
               '--enc_layers', '1', '--dec_layers', '2', '--num_queries', '3', '--with_box_refine', '--binary',
               '--freeze_text_encoder']
"""A BIFIT small enough for CPU tests of the pipelines (the network itself is tested at full width)."""


def generate_synthetic(out: Path, *flags: str) -> Path:
    """The synthetic datasets of `tools/make_synthetic_data.py` under `out`."""
    from tools import make_synthetic_data
    args = make_synthetic_data.get_parser().parse_args(['--out', str(out), *flags])
    make_synthetic_data.make(out, args.benchmarks, args)
    return out


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory) -> Path:
    """Every benchmark's synthetic dataset (small) in one folder, for the entry-script tests."""
    return generate_synthetic(tmp_path_factory.mktemp('synthetic'), '--refshapes_train', '4',
                              '--refshapes_valid', '2')


@pytest.fixture(scope='session')
def small_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint (`{'model': ...}`) of the small BIFIT with random weights."""
    from models import build_model
    torch.manual_seed(0)
    model, _, _ = build_model(parse_args(SMALL_MODEL))
    path = tmp_path_factory.mktemp('checkpoint') / 'small.pth'
    torch.save({'model': model.state_dict()}, path)
    return path

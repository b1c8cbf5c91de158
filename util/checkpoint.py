"""Reading checkpoints (BIFIT's, and the pretrained weights of its parts) and loading them into a model,
writing checkpoints atomically, and the training checkpoints of an output folder: `checkpoint.pth` written
once per epoch, `checkpointNNNN.pth` a hard link to it, the newest complete one found to continue from."""
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from util.cli import UserError, disk_full
from util.files import atomic_write, disk_short, link_or_copy, require_free_space

logger = logging.getLogger(__name__)

IGNORED_KEYS = ('text_encoder.embeddings.position_ids',)
LAST_CHECKPOINT = 'checkpoint.pth'
EPOCH_CHECKPOINT = re.compile(r'^checkpoint(\d{4,})\.pth$')
# Room beyond the tensors for a checkpoint's pickled structure (the options, the optimizer's groups).
CHECKPOINT_OVERHEAD = 2 ** 20


def read_checkpoint(path: str) -> Dict:
    """The checkpoint dict at `path`, with a clear error when it is missing or unreadable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as error:
        reason = ' '.join(str(error).split())
        raise UserError(f'{path} is not a readable PyTorch checkpoint (truncated, or another kind of file?): '
                        f'{reason[:300]}') from error


def read_state_dict(path: str) -> Dict[str, Tensor]:
    """The weights of a pretrained file (`--backbone_pretrained`): a bare state dict, or the one it holds
    under 'model' (the image Swin checkpoints) and/or 'state_dict' (the Video Swin ones)."""
    checkpoint = read_checkpoint(path)
    for key in ('model', 'state_dict'):
        if isinstance(checkpoint, dict) and key in checkpoint and isinstance(checkpoint[key], dict):
            checkpoint = checkpoint[key]
    return checkpoint


def model_state_dict(checkpoint: Dict) -> Dict[str, Tensor]:
    """The model weights of a checkpoint (`{'model': ...}` or a bare state dict), without the
    `module.` prefix of DistributedDataParallel and without buffers current `transformers` drops."""
    state_dict = checkpoint.get('model', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise UserError('the checkpoint holds neither a state dict nor {"model": state dict}')
    prefix = 'module.'
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return {k: v for k, v in state_dict.items() if k not in IGNORED_KEYS}


def _examples(keys: List[str], n: int = 8) -> str:
    shown = ', '.join(keys[:n])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def compare_state_dicts(model: nn.Module, state_dict: Dict[str, Tensor]) -> Tuple[List[str], List[str], List[str]]:
    """Keys the model has but the file lacks, keys the file has but the model lacks, and keys of both
    whose shapes differ (as 'key: file shape vs model shape')."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f'{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
                  if k in state_dict and state_dict[k].shape != v.shape]
    return missing, unexpected, mismatched


def load_model_weights(model: nn.Module, state_dict: Dict[str, Tensor], source: str = 'checkpoint') -> None:
    """Load `state_dict` into `model` with every key and shape matching.

    Anything else (a checkpoint of another model, backbone or configuration) stops with an error
    that names the missing, unexpected and mismatched keys instead of running a half-random network.
    """
    missing, unexpected, mismatched = compare_state_dicts(model, state_dict)
    if missing or unexpected or mismatched:
        total = len(model.state_dict())
        matched = total - len(missing) - len(mismatched)
        raise UserError(
            f'{source} does not fit this model ({matched} of its {total} entries match): is it a checkpoint of '
            f'another model or backbone (check --backbone, --binary, --num_queries, --dec_layers, ...)?\n'
            f'  shape mismatches: {_examples(mismatched) or "none"}\n'
            f'  missing keys: {_examples(missing) or "none"}\n'
            f'  unexpected keys: {_examples(unexpected) or "none"}')
    model.load_state_dict(state_dict, strict=True)


def check_finite(state_dict: Dict[str, Tensor], source: str) -> None:
    """A UserError naming `source` and its first parameter with a NaN or infinite value (tensors on the meta
    device, which hold no values, are skipped)."""
    for key, value in state_dict.items():
        if value.is_floating_point() and not value.is_meta and not bool(torch.isfinite(value).all()):
            raise UserError(f'{source}: parameter {key} holds NaN or infinite values: the checkpoint is broken '
                            f'(e.g. a diverged training); use an earlier checkpoint')


def load_checkpoint(model: nn.Module, checkpoint: Dict, source: str, description: str = 'the model') -> None:
    """Load the model weights of `checkpoint` (read from `source`) into `model` (see `load_model_weights`;
    non-finite weights are refused, see `check_finite`) and log one line that names the file, `description`
    (e.g. the backbone) and the training epochs it has."""
    try:
        state_dict = model_state_dict(checkpoint)
    except UserError as error:
        raise UserError(f'{source}: {error}') from error
    check_finite(state_dict, source)
    load_model_weights(model, state_dict, source=source)
    epochs = checkpoint['epoch'] + 1 if isinstance(checkpoint.get('epoch'), int) else None
    logger.info('loaded %s into %s: all %d weights match%s', source, description, len(state_dict),
                '' if epochs is None else f' (trained for {epochs} epoch{"s" * (epochs != 1)})')


def load_checkpoint_file(model: nn.Module, path: str, description: str = 'the model') -> Dict:
    """Read `path` and load its model weights into `model` (see `load_checkpoint`); returns the checkpoint."""
    checkpoint = read_checkpoint(path)
    load_checkpoint(model, checkpoint, path, description)
    return checkpoint


def save_checkpoint_atomic(obj: Dict, path: str) -> None:
    """`torch.save` through `atomic_write`: a crash never leaves a truncated checkpoint at `path`."""
    with atomic_write(path, 'wb') as f:
        torch.save(obj, f)


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in `obj` (nested dicts, lists and tuples): about a checkpoint's file size."""
    if isinstance(obj, Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def save_training_checkpoint(checkpoint: Dict, folder: str, epoch: int) -> Path:
    """`<folder>/checkpoint.pth`, written once (atomically) after a check of the free space, and
    `<folder>/checkpoint<epoch:04>.pth` made from it without a second write (see `link_or_copy`)."""
    folder = Path(folder)
    size = tensor_bytes(checkpoint) + CHECKPOINT_OVERHEAD
    require_free_space(folder, size)
    last = folder / LAST_CHECKPOINT
    try:
        save_checkpoint_atomic(checkpoint, str(last))
        link_or_copy(last, folder / f'checkpoint{epoch:04}.pth')
    except (OSError, RuntimeError) as error:
        if disk_full(error) is not None:
            raise disk_short(folder, size) from error
        require_free_space(folder, size)  # a write that failed as the disk filled says so
        raise
    return last


def newest_checkpoint(folder: str) -> Tuple[Optional[Path], Optional[Dict]]:
    """The newest complete training checkpoint of `folder` and its content: `checkpoint.pth` or the
    `checkpointNNNN.pth` of a later epoch, whichever reads back; (None, None) when there is none."""
    folder = Path(folder)
    numbered = sorted(((int(m.group(1)), folder / m.group(0)) for m in
                       (EPOCH_CHECKPOINT.match(p.name) for p in folder.glob('checkpoint*.pth')) if m), reverse=True)
    best: Tuple[Optional[Path], Optional[Dict]] = (None, None)
    last = folder / LAST_CHECKPOINT
    if last.is_file():
        best = readable_checkpoint(last)
    last_epoch = best[1].get('epoch', -1) if isinstance(best[1], dict) else -1
    for epoch, path in numbered:
        if epoch <= last_epoch:
            break
        candidate = readable_checkpoint(path)
        if candidate[0] is not None:
            return candidate
    return best


def readable_checkpoint(path: Path) -> Tuple[Optional[Path], Optional[Dict]]:
    """(path, checkpoint) when `path` reads back as a checkpoint, else (None, None) with a warning."""
    try:
        return path, read_checkpoint(str(path))
    except (OSError, RuntimeError) as error:
        logger.warning('%s is not a complete checkpoint, passed over (%s)', path, error)
        return None, None

"""Padded batches (`NestedTensor`) and their padding masks, and the small distributed helpers every script uses."""
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from util.processes import die_with_parent


class NestedTensor:
    """A padded batch and its padding mask (True on padding).

    Videos: `tensors [B, T, 3, H, W]`, `mask [B, T, H, W]`; feature maps: `[N, C, h, w]` and `[N, h, w]`;
    words: `[B, L, C]` and `[B, L]`.
    """

    def __init__(self, tensors: Tensor, mask: Optional[Tensor]):
        self.tensors = tensors
        self.mask = mask

    def to(self, device, non_blocking: bool = False) -> 'NestedTensor':
        mask = None if self.mask is None else self.mask.to(device, non_blocking=non_blocking)
        return NestedTensor(self.tensors.to(device, non_blocking=non_blocking), mask)

    def __repr__(self) -> str:
        return f'NestedTensor(tensors={tuple(self.tensors.shape)}, mask={tuple(self.mask.shape)})'


def downsample_mask(mask: Tensor, size) -> Tensor:
    """Nearest-neighbour resize of a padding mask `[N, H, W]` to `[N, *size]`."""
    return F.interpolate(mask[None].float(), size=size).to(torch.bool)[0]


def _padded_shape(shapes: Sequence[Sequence[int]], size_divisibility: int) -> List[int]:
    """The element-wise maximum of `shapes`, its last two sizes rounded up to `size_divisibility`."""
    padded = [max(sizes) for sizes in zip(*shapes)]
    if size_divisibility > 1:
        padded[-2:] = [(s + size_divisibility - 1) // size_divisibility * size_divisibility
                       for s in padded[-2:]]
    return padded


def nested_tensor_from_videos_list(videos: Sequence[Tensor], size_divisibility: int = 1) -> NestedTensor:
    """Pad B videos `[T, 3, H_i, W_i]` at the bottom/right to `[B, T, 3, H, W]`, mask `[B, T, H, W]`.

    H and W are the largest sizes of the batch, rounded up to `size_divisibility` (1: no rounding).
    """
    t, c, h, w = _padded_shape([v.shape for v in videos], size_divisibility)
    batch = videos[0].new_zeros((len(videos), t, c, h, w))
    mask = torch.ones((len(videos), t, h, w), dtype=torch.bool, device=videos[0].device)
    for video, padded, padding in zip(videos, batch, mask):
        frames, _, height, width = video.shape
        padded[:frames, :, :height, :width].copy_(video)
        padding[:frames, :height, :width] = False
    return NestedTensor(batch, mask)


def nested_tensor_from_tensor_list(tensors: Sequence[Tensor], size_divisibility: int = 1) -> NestedTensor:
    """Zero-pad B tensors `[..., H_i, W_i]` (same leading sizes) to one batch `[B, ..., H, W]`.

    The mask `[B, H, W]` is True on padding; H and W are rounded up to `size_divisibility`.
    """
    shape = _padded_shape([x.shape for x in tensors], size_divisibility)
    batch = tensors[0].new_zeros([len(tensors)] + shape)
    mask = torch.ones((len(tensors), shape[-2], shape[-1]), dtype=torch.bool, device=tensors[0].device)
    for x, padded, padding in zip(tensors, batch, mask):
        padded[tuple(slice(0, s) for s in x.shape)].copy_(x)
        padding[:x.shape[-2], :x.shape[-1]] = False
    return NestedTensor(batch, mask)


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def local_rank() -> int:
    return int(os.environ.get('LOCAL_RANK', 0))


def init_distributed_mode(args) -> None:
    """Join the process group that `torchrun` / `torch.distributed.launch --use_env` describe in the
    environment (NCCL on CUDA, gloo on CPU); a single process otherwise.

    Sets `args.distributed`, `args.rank`, `args.world_size` and, on CUDA, `args.device` to this
    process's GPU. A process of a job dies with the launcher that started it (`torchrun` does not stop its
    ranks when it is killed by SIGKILL).
    """
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        args.distributed, args.rank, args.world_size = False, 0, 1
        return
    die_with_parent()
    args.distributed = True
    args.rank = int(os.environ['RANK'])
    args.world_size = int(os.environ['WORLD_SIZE'])
    use_cuda = str(args.device).startswith('cuda')
    if use_cuda:
        torch.cuda.set_device(local_rank())
        args.device = f'cuda:{local_rank()}'
    dist.init_process_group(backend='nccl' if use_cuda else 'gloo', init_method=args.dist_url,
                            world_size=args.world_size, rank=args.rank)
    dist.barrier()


def reduce_dict(values: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The average over all processes of each (scalar) tensor of `values`."""
    world_size = get_world_size()
    if world_size == 1:
        return values
    names = sorted(values)
    stacked = torch.stack([values[k].detach().float() for k in names])
    dist.all_reduce(stacked)
    return dict(zip(names, stacked / world_size))


def all_gather(obj: Any) -> List[Any]:
    """`obj` of every process (any picklable object), in rank order."""
    if get_world_size() == 1:
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if is_dist_avail_and_initialized():
        dist.barrier()


def targets_to(targets: List[Dict], device) -> List[Dict]:
    """Move the tensors of every target dict to `device` (strings and other values stay)."""
    return [{k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()}
            for t in targets]

"""Batches of clips: the collate function and the train / evaluation DataLoaders."""
from typing import Dict, List, Sequence, Tuple

from torch import Tensor
from torch.utils.data import (BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler,
                              SequentialSampler)

from util.misc import NestedTensor, is_dist_avail_and_initialized, nested_tensor_from_videos_list

SIZE_DIVISIBILITY = 32


def collate_fn(batch: Sequence[Tuple[Tensor, Dict]]) -> Tuple[NestedTensor, List[Dict]]:
    """B items -> videos padded to `[B, T, 3, H, W]` (H, W multiples of 32, mask True on padding), B targets."""
    videos, targets = zip(*batch)
    return nested_tensor_from_videos_list(list(videos), size_divisibility=SIZE_DIVISIBILITY), list(targets)


def build_data_loader(dataset: Dataset, args, train: bool) -> DataLoader:
    """Distributed sampling when torch.distributed is initialised, shuffled for training; training drops the
    last incomplete batch. Call `set_epoch` at the start of every epoch."""
    if is_dist_avail_and_initialized():
        sampler = DistributedSampler(dataset, shuffle=train)
    else:
        sampler = RandomSampler(dataset) if train else SequentialSampler(dataset)
    batch_sampler = BatchSampler(sampler, args.batch_size, drop_last=train)
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, num_workers=args.num_workers)


def set_epoch(data_loader: DataLoader, epoch: int) -> None:
    """A new shuffle per epoch for distributed sampling (nothing to do otherwise)."""
    sampler = data_loader.batch_sampler.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)

"""Running inference over shards of a benchmark in `--ngpu` worker processes (one per GPU; on CPU
the threads are split between them), with one progress bar; a worker that fails is reported and the
others are stopped."""
import os
import traceback
from typing import Callable, List, Sequence

import torch
import torch.multiprocessing as mp
from tqdm import tqdm


def worker_device(rank: int, args) -> torch.device:
    if str(args.device).startswith('cuda'):
        device = torch.device('cuda', rank)
        torch.cuda.set_device(device)
        return device
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, args.ngpu)))
    return torch.device('cpu')


class _BarProgress:
    """What a single in-process worker reports to: the progress bar itself."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def put(self, message) -> None:
        if isinstance(message, int):
            self.bar.update(message)


def _worker(target: Callable, rank: int, args, share, progress) -> None:
    try:
        device = worker_device(rank, args)
        target(device, args, share, progress)
    except BaseException:
        progress.put(f'worker {rank} failed:\n{traceback.format_exc()}')
        raise


def run_sharded(target: Callable, args, shares: Sequence, total: int, desc: str) -> None:
    """Call `target(device, args, share, progress)` for every share, in one process per share when there
    are several (`target` must be picklable: a module-level function); `progress.put(n)` advances the bar
    by n of `total`."""
    if str(args.device).startswith('cuda') and len(shares) > torch.cuda.device_count():
        raise SystemExit(f'--ngpu {args.ngpu} but only {torch.cuda.device_count()} GPUs are visible')
    bar = tqdm(total=total, desc=desc, dynamic_ncols=True)
    if len(shares) == 1:
        _worker(target, 0, args, shares[0], _BarProgress(bar))
        bar.close()
        return
    context = mp.get_context('spawn')
    queue = context.Queue()
    processes = [context.Process(target=_worker, args=(target, rank, args, share, queue))
                 for rank, share in enumerate(shares)]
    for process in processes:
        process.start()
    done = 0
    while done < total:
        message = queue.get()
        if isinstance(message, str):
            for process in processes:
                process.terminate()
            raise RuntimeError(message)
        done += message
        bar.update(message)
    for process in processes:
        process.join()
    bar.close()


def split_evenly(items: List, num_shares: int) -> List[List]:
    """At most `num_shares` non-empty shares, item i going to share i mod n."""
    num_shares = max(1, min(num_shares, len(items)))
    return [items[i::num_shares] for i in range(num_shares)]

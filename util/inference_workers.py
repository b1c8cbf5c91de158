"""Running inference over shards of a benchmark in `--ngpu` worker processes (one per GPU; on CPU
the threads are split between them), with one progress bar; a worker that fails, or dies without a word (killed), is reported with its exit
code and the others are stopped; workers die with the parent, even when it is killed."""
import os
import queue as queues
import traceback
from typing import Callable, List, Sequence

import torch
import torch.multiprocessing as mp
from tqdm import tqdm

from util.cli import UserError
from util.processes import die_with_parent

# How often the parent looks at its workers while it waits for their progress.
POLL_SECONDS = 1.0


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


def _worker(target: Callable, rank: int, args, share, progress, parent: int = None) -> None:
    if parent is not None:
        die_with_parent(parent)
    try:
        device = worker_device(rank, args)
        target(device, args, share, progress)
    except UserError as error:
        progress.put(('user error', str(error)))
        raise SystemExit(1) from None
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
    processes = [context.Process(target=_worker, args=(target, rank, args, share, queue, os.getpid()))
                 for rank, share in enumerate(shares)]
    try:
        for process in processes:
            process.start()
        done = 0
        while done < total:
            try:
                message = queue.get(timeout=POLL_SECONDS)
            except queues.Empty:
                check_workers(processes)
                continue
            if isinstance(message, tuple):
                raise UserError(message[1])
            if isinstance(message, str):
                raise RuntimeError(message)
            done += message
            bar.update(message)
        for process in processes:
            process.join()
        check_workers(processes, finished=True)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            if process.pid is not None:
                process.join(POLL_SECONDS * 10)
            if process.is_alive():
                process.kill()
        bar.close()


def check_workers(processes: Sequence, finished: bool = False) -> None:
    """A UserError naming the first worker that ended with a non-zero exit code (negative: killed by that
    signal), or, unless `finished`, when all ended before reporting all their work."""
    for rank, process in enumerate(processes):
        if process.exitcode not in (None, 0):
            signal = f' (killed by signal {-process.exitcode})' if process.exitcode < 0 else ''
            raise UserError(f'inference worker {rank} (pid {process.pid}) died with exit code '
                            f'{process.exitcode}{signal}; the other workers were stopped; the same command '
                            f'resumes the work')
    if not finished and all(process.exitcode is not None for process in processes):
        raise UserError('the inference workers ended before reporting all their work')


def split_evenly(items: List, num_shares: int) -> List[List]:
    """At most `num_shares` non-empty shares, item i going to share i mod n."""
    num_shares = max(1, min(num_shares, len(items)))
    return [items[i::num_shares] for i in range(num_shares)]

"""Smoothed training statistics with a tqdm progress bar and periodic log lines."""
import datetime
import logging
import sys
import time
from collections import defaultdict, deque
from typing import Dict, Iterable, Iterator

import torch
import torch.distributed as dist
from tqdm import tqdm

from .misc import is_dist_avail_and_initialized, is_main_process

logger = logging.getLogger('bifit')


def setup_logging(output_dir: str = None) -> None:
    """Log lines `time level message` on the main process (warnings only on the others), also to
    `<output_dir>/train.log` when given."""
    handlers = [logging.StreamHandler(sys.stdout)]
    if output_dir and is_main_process():
        handlers.append(logging.FileHandler(f'{output_dir}/train.log'))
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s', datefmt='%H:%M:%S',
                        handlers=handlers, force=True)


class SmoothedValue:
    """A running median/average over a window and the average over the whole run."""

    def __init__(self, window_size: int = 20):
        self.window = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.window.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self) -> None:
        """Make `global_avg` the average over all processes (the window stays local)."""
        if not is_dist_avail_and_initialized():
            return
        totals = torch.tensor([self.count, self.total], dtype=torch.float64)
        dist.all_reduce(totals)
        self.count, self.total = int(totals[0].item()), totals[1].item()

    @property
    def median(self) -> float:
        return torch.tensor(list(self.window)).median().item()

    @property
    def avg(self) -> float:
        return sum(self.window) / max(len(self.window), 1)

    @property
    def global_avg(self) -> float:
        return self.total / max(self.count, 1)


class MetricLogger:
    """Collects named values; `log_every` iterates with a progress bar (main process) and logs the
    smoothed values every `print_freq` iterations."""

    def __init__(self, window_size: int = 20):
        self.meters: Dict[str, SmoothedValue] = defaultdict(lambda: SmoothedValue(window_size))

    def update(self, **values) -> None:
        for name, value in values.items():
            self.meters[name].update(value.item() if isinstance(value, torch.Tensor) else float(value))

    def summary(self, keys: Iterable[str] = None) -> str:
        keys = keys or self.meters
        return '  '.join(f'{k}: {self.meters[k].median:.4f} ({self.meters[k].global_avg:.4f})' for k in keys)

    def synchronize_between_processes(self) -> None:
        for meter in self.meters.values():
            meter.synchronize_between_processes()

    def global_averages(self) -> Dict[str, float]:
        return {k: meter.global_avg for k, meter in self.meters.items()}

    def log_every(self, iterable, print_freq: int, header: str, shown=('loss', 'lr'), total: int = None) -> Iterator:
        """The items of `iterable` (`total` of them: default `len(iterable)` when it has one)."""
        start = time.time()
        if total is None and hasattr(iterable, '__len__'):
            total = len(iterable)
        bar = tqdm(iterable, total=total, desc=header, disable=not is_main_process(), dynamic_ncols=True,
                   file=sys.stdout, leave=False)
        iterations = 0
        for item in bar:
            yield item
            iterations += 1
            present = [k for k in shown if k in self.meters]
            bar.set_postfix({k: f'{self.meters[k].median:.4f}' if k != 'lr' else f'{self.meters[k].avg:.2e}'
                             for k in present}, refresh=False)
            if iterations % print_freq == 0 or iterations == total:
                logger.info('%s [%d/%s] %s', header, iterations, total if total is not None else '?', self.summary())
        seconds = time.time() - start
        logger.info('%s done in %s (%.3f s / it)', header, datetime.timedelta(seconds=int(seconds)),
                    seconds / max(1, iterations))

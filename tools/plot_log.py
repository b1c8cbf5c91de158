"""Training curves of one or more runs in one PNG, for those who do not run TensorBoard.

    python tools/plot_log.py ytvos_dirs/r50/log.txt                       # -> ytvos_dirs/r50/curves.png
    python tools/plot_log.py runs/a/log.txt runs/b/log.txt --labels "8 GPUs" "2 GPUs x 4" --out compare.png

Reads the per-epoch lines of each `log.txt` (training averages, evaluation metrics) and, when main.py wrote
TensorBoard event files beside it, the loss, learning rate and gradient norm of every optimisation step.
One line per run, labelled (default: the run's folder name).
"""
import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util.cli import run  # noqa: E402
from util.files import atomic_write, require  # noqa: E402

# (title, TensorBoard tag of every step, log.txt key of every epoch)
STEP_PANELS = (('training loss', 'train/loss', 'train_loss'), ('learning rate', 'lr/other', 'train_lr'),
               ('gradient norm', 'train/grad_norm', 'train_grad_norm'))
NOT_METRICS = ('epoch', 'n_parameters')
SMOOTH_ABOVE = 50  # per-step curves longer than this are drawn with a running mean over 1/50 of them
Series = Tuple[List[float], List[float]]


def read_log(path: Path) -> List[Dict]:
    """The JSON lines of a log.txt (one per epoch), with a clear error for a line that is not JSON."""
    entries = []
    for number, line in enumerate(require(path, 'training log', 'the log.txt main.py writes').read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise SystemExit(f'{path}:{number} is not a JSON line ({error.msg}): is it a log.txt of main.py?')
    return entries


def read_steps(folder: Path) -> Dict[str, Series]:
    """The per-step scalars of the TensorBoard event files in `folder` ({tag: (steps, values)}); empty when
    there are none (--no_tensorboard, or a run of the original implementation)."""
    if not any(folder.glob('events.out.tfevents.*')):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(folder), size_guidance={'scalars': 0})
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()['scalars']:
        events = {event.step: event.value for event in accumulator.Scalars(tag)}  # a resumed run's last value
        steps = sorted(events)
        series[tag] = (steps, [events[step] for step in steps])
    return series


def run_labels(paths: Sequence[Path], labels: Sequence[str]) -> List[str]:
    if labels:
        if len(labels) != len(paths):
            raise SystemExit(f'--labels: {len(labels)} labels for {len(paths)} logs')
        return list(labels)
    names = [path.resolve().parent.name for path in paths]
    return names if len(set(names)) == len(names) else [str(path.parent) for path in paths]


def panels(runs: Dict[str, Tuple[List[Dict], Dict[str, Series]]]) -> List[Tuple[str, str, Dict[str, Series]]]:
    """(title, x label, {run: (x, y)}) of every curve some run has: per step when event files exist, per
    epoch otherwise, then the evaluation metrics per epoch."""
    def per_epoch(key: str) -> Dict[str, Series]:
        curves = {}
        for label, (entries, _) in runs.items():
            points = [(e['epoch'], e[key]) for e in entries if isinstance(e.get(key), (int, float))]
            if points:
                curves[label] = tuple(map(list, zip(*points)))
        return curves

    result = []
    for title, tag, key in STEP_PANELS:
        steps = {label: series[tag] for label, (_, series) in runs.items() if tag in series}
        if steps:
            result.append((title, 'optimisation step', steps))
        if key == 'train_loss' or not steps:
            result.append((f'{title} (epoch average)', 'epoch', per_epoch(key)))
    metrics = sorted({k for entries, _ in runs.values() for e in entries for k in e
                      if not k.startswith('train_') and k not in NOT_METRICS})
    result += [(metric, 'epoch', per_epoch(metric)) for metric in metrics]
    return [panel for panel in result if panel[2]]


def running_mean(values: Sequence[float], window: int) -> List[float]:
    """The mean of each value with the `window - 1` values before it (fewer at the start)."""
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return list((sums[ends] - sums[starts]) / (ends - starts))


def plot(runs: Dict[str, Tuple[List[Dict], Dict[str, Series]]], out: Path) -> None:
    shown = panels(runs)
    if not shown:
        raise SystemExit('nothing to plot: the logs hold no epoch yet')
    columns = min(3, len(shown))
    rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(5 * columns, 3.6 * rows), layout='constrained')
    for index, (title, xlabel, curves) in enumerate(shown):
        axes = figure.add_subplot(rows, columns, index + 1)
        for label, (x, y) in curves.items():
            if len(y) > SMOOTH_ABOVE:  # noisy per-step values: faint, under their running mean
                line, = axes.plot(x, y, linewidth=0.6, alpha=0.3)
                axes.plot(x, running_mean(y, len(y) // SMOOTH_ABOVE), label=label, color=line.get_color(),
                          linewidth=1.5)
            else:
                axes.plot(x, y, label=label, marker='o' if len(x) < 30 else None, linewidth=1.2)
        if title.startswith('learning rate') and all(v > 0 for _, ys in curves.values() for v in ys):
            axes.set_yscale('log')
        axes.set_title(title)
        axes.set_xlabel(xlabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize='small')
    with atomic_write(out, 'wb') as f:
        figure.savefig(f, format='png', dpi=100)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('logs', nargs='+', type=Path, help='log.txt files of main.py (one per run)')
    parser.add_argument('--labels', nargs='+', default=[], help='a label per run (default: its folder name)')
    parser.add_argument('--out', type=Path, default=None, help='the PNG (default: curves.png beside the first log)')
    return parser


def main(argv: Sequence[str] = None) -> Path:
    args = get_parser().parse_args(argv)
    labels = run_labels(args.logs, args.labels)
    runs = {label: (read_log(path), read_steps(path.parent)) for label, path in zip(labels, args.logs)}
    out = args.out or args.logs[0].parent / 'curves.png'
    plot(runs, out)
    print(f'curves of {len(runs)} run(s) written to {out}')
    return out


if __name__ == '__main__':
    run(main, list)

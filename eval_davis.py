"""DAVIS-2017 evaluation of a results folder, as the official davis2017-evaluation toolkit does it.

    python eval_davis.py --results_path DIR [DIR ...] [--davis_path data/ref-davis/DAVIS] [--set val]
                         [--task unsupervised] [--mean_csv FILE]

DIR/<sequence>/<frame>.png holds, for every annotated frame, a palette or grayscale PNG of proposal
ids (0 background). Writes DIR/global_results-<set>.csv and DIR/per-sequence_results-<set>.csv
(always recomputed; numbers with 5 decimals, as the original's eval_davis.py writes them) and prints
both tables. With several folders (the four Ref-DAVIS17 annotators), each is evaluated in turn, then
the mean of their global results is printed (and written to --mean_csv): the Ref-DAVIS17 number.
"""
import argparse
import csv
import os
import time
from typing import Dict, List, Sequence

import numpy as np

from util.davis_metrics import GLOBAL_COLUMNS, TASKS, evaluate_davis
from util.cli import ArgumentParser, run
from util.files import atomic_write

NUMBER_FORMAT = '%.5f'  # the original's `to_csv(float_format='%.5f')`


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description='DAVIS-2017 evaluation (J & F), as the official toolkit computes it. Scores the masks of a results folder against DAVIS-2017 annotations and writes '
                    'global_results-<set>.csv and per-sequence_results-<set>.csv into it.')
    parser.add_argument('--results_path', required=True, type=str, nargs='+',
                        help='folder with one sub-folder of PNG masks per sequence, <sequence>/<frame>.png; '
                             '(new) several folders are evaluated in turn and the mean of their global results '
                             'printed (Ref-DAVIS17: the four annotators, anno_0 .. anno_3)')
    parser.add_argument('--davis_path', default='data/ref-davis/DAVIS', type=str,
                        help='DAVIS root holding ImageSets/2017 and Annotations_unsupervised/480p '
                             '(Annotations/480p for the semi-supervised task)')
    parser.add_argument('--set', default='val', type=str,
                        help='subset, a list ImageSets/2017/<set>.txt (val, test-dev, ...)')
    parser.add_argument('--task', default='unsupervised', choices=TASKS,
                        help='unsupervised: proposals matched to objects by the Hungarian algorithm; '
                             'semi-supervised: proposal k is object k, frames 1..T-2 only')
    parser.add_argument('--mean_csv', default=None, type=str,
                        help='(new) also write the mean of the global results of the --results_path folders '
                             'to this csv (Ref-DAVIS17 publishes the mean over its four annotators)')
    return parser


def formatted(row: Sequence) -> List[str]:
    return [value if isinstance(value, str) else NUMBER_FORMAT % value for value in row]


def write_csv(path: str, header: Sequence[str], rows: List[Sequence]) -> None:
    """Writes a csv (atomically), numbers with 5 decimals."""
    with atomic_write(path, newline='') as file:
        writer = csv.writer(file, lineterminator='\n')
        writer.writerow(header)
        writer.writerows([formatted(row) for row in rows])


def format_table(header: Sequence[str], rows: List[Sequence]) -> str:
    """Right-aligned text table, numbers with 5 decimals."""
    cells = [list(header)] + [formatted(row) for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return '\n'.join('  '.join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells)


def evaluate_folder(results_path: str, args: argparse.Namespace) -> Dict[str, float]:
    """Evaluate one results folder, write its two csv files, print them; returns its global row."""
    global_row, per_object = evaluate_davis(results_path, args.davis_path, args.set, args.task)
    global_table = [[global_row[column] for column in GLOBAL_COLUMNS]]
    sequence_header = ('Sequence', 'J-Mean', 'F-Mean')
    sequence_table = [[row[column] for column in sequence_header] for row in per_object]
    write_csv(os.path.join(results_path, f'global_results-{args.set}.csv'), GLOBAL_COLUMNS, global_table)
    write_csv(os.path.join(results_path, f'per-sequence_results-{args.set}.csv'), sequence_header, sequence_table)

    print(f'--------------------------- Global results for {args.set} ---------------------------')
    print(format_table(GLOBAL_COLUMNS, global_table))
    print(f'\n---------- Per sequence results for {args.set} ----------')
    print(format_table(sequence_header, sequence_table))
    return global_row


def report_mean(rows: List[Dict[str, float]], args: argparse.Namespace) -> None:
    """Print the mean of the folders' global results, J&F, J and F in percent as papers give them, and
    write it to `--mean_csv`."""
    mean = [float(np.mean([row[column] for row in rows])) for column in GLOBAL_COLUMNS]
    print(f'\n---------- Mean of the global results of {len(rows)} folders for {args.set} ----------')
    print(format_table(GLOBAL_COLUMNS, [mean]))
    j_and_f, j, f = (100 * dict(zip(GLOBAL_COLUMNS, mean))[c] for c in ('J&F-Mean', 'J-Mean', 'F-Mean'))
    print(f'J&F {j_and_f:.1f}  J {j:.1f}  F {f:.1f}')
    if args.mean_csv:
        write_csv(args.mean_csv, GLOBAL_COLUMNS, [mean])
        print(f'written to {args.mean_csv}')


def main(args: argparse.Namespace) -> None:
    time_start = time.time()
    rows = []
    for results_path in args.results_path:
        if rows:
            print()
        rows.append(evaluate_folder(results_path, args))
    if len(rows) > 1 or args.mean_csv:
        report_mean(rows, args)
    print(f'\nTotal time: {time.time() - time_start:.1f} s')


if __name__ == '__main__':
    run(main, get_args_parser().parse_args, user_errors=(ValueError,))

"""DAVIS-2017 evaluation of a results folder, as the official davis2017-evaluation toolkit does it.

    python eval_davis.py --results_path DIR [--davis_path data/ref-davis/DAVIS] [--set val]
                         [--task unsupervised]

DIR/<sequence>/<frame>.png holds, for every annotated frame, a palette or grayscale PNG of proposal
ids (0 background). Writes DIR/global_results-<set>.csv and DIR/per-sequence_results-<set>.csv
(always recomputed) and prints both tables.
"""
import argparse
import csv
import os
import sys
import time
from typing import List, Sequence

from util.davis_metrics import GLOBAL_COLUMNS, TASKS, evaluate_davis


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='DAVIS-2017 evaluation (J & F), as the official toolkit computes it. Scores the masks of a results folder against DAVIS-2017 annotations and writes '
                    'global_results-<set>.csv and per-sequence_results-<set>.csv into it.')
    parser.add_argument('--results_path', required=True, type=str,
                        help='folder with one sub-folder of PNG masks per sequence, <sequence>/<frame>.png')
    parser.add_argument('--davis_path', default='data/ref-davis/DAVIS', type=str,
                        help='DAVIS root holding ImageSets/2017 and Annotations_unsupervised/480p '
                             '(Annotations/480p for the semi-supervised task)')
    parser.add_argument('--set', default='val', type=str,
                        help='subset, a list ImageSets/2017/<set>.txt (val, test-dev, ...)')
    parser.add_argument('--task', default='unsupervised', choices=TASKS,
                        help='unsupervised: proposals matched to objects by the Hungarian algorithm; '
                             'semi-supervised: proposal k is object k, frames 1..T-2 only')
    return parser


def write_csv(path: str, header: Sequence[str], rows: List[Sequence]) -> None:
    """Writes a csv, numbers formatted as %.3f."""
    with open(path, 'w', newline='') as file:
        writer = csv.writer(file, lineterminator='\n')
        writer.writerow(header)
        writer.writerows([[value if isinstance(value, str) else '%.3f' % value for value in row] for row in rows])


def format_table(header: Sequence[str], rows: List[Sequence]) -> str:
    """Right-aligned text table, numbers as %.3f."""
    cells = [list(header)] + [[value if isinstance(value, str) else '%.3f' % value for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return '\n'.join('  '.join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells)


def main(args: argparse.Namespace) -> None:
    time_start = time.time()
    global_row, per_object = evaluate_davis(args.results_path, args.davis_path, args.set, args.task)

    global_table = [[global_row[column] for column in GLOBAL_COLUMNS]]
    sequence_header = ('Sequence', 'J-Mean', 'F-Mean')
    sequence_table = [[row[column] for column in sequence_header] for row in per_object]
    write_csv(os.path.join(args.results_path, f'global_results-{args.set}.csv'), GLOBAL_COLUMNS, global_table)
    write_csv(os.path.join(args.results_path, f'per-sequence_results-{args.set}.csv'), sequence_header,
              sequence_table)

    print(f'--------------------------- Global results for {args.set} ---------------------------')
    print(format_table(GLOBAL_COLUMNS, global_table))
    print(f'\n---------- Per sequence results for {args.set} ----------')
    print(format_table(sequence_header, sequence_table))
    print(f'\nTotal time: {time.time() - time_start:.1f} s')


if __name__ == '__main__':
    try:
        main(get_args_parser().parse_args())
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f'eval_davis.py: error: {error}')

"""Split a Ref-YouTube-VOS train set into a smaller train set and a held-out validation set with masks, so that
J&F can be measured locally (`inference_ytvos.py` then `eval_rvos.py`) instead of by the evaluation server.

    python tools/split_ytvos_holdout.py --ytvos_path data/ref-youtube-vos --out data/ref-youtube-vos-holdout
    python main.py ... --ytvos_path data/ref-youtube-vos-holdout                      # train on the rest
    python inference_ytvos.py ... --ytvos_path data/ref-youtube-vos-holdout --output_dir DIR --no_zip
    python eval_rvos.py --pred_path DIR/valid --gt_path data/ref-youtube-vos-holdout

Whole videos are held out (all their expressions), drawn with `--seed`. The output is the Ref-YouTube-VOS
layout with `train/` and `valid/` (both with `Annotations/` and `meta.json`) and the two meta_expressions
files; no frame is copied: with `--link symlink` (default) each video folder is a symbolic link to the
source's, with `--link hardlink` each file is a hard link (same file system only), `--link copy` copies.
Running it again with the same options rewrites the same split; a folder not made by this tool is never
overwritten.
"""
import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util.cli import run  # noqa: E402
from util.files import atomic_write, read_json, require, write_json  # noqa: E402

MARKER = '.holdout_split.json'
LINKS = ('symlink', 'hardlink', 'copy')
MEDIA = ('JPEGImages', 'Annotations')
HINT = 'a Ref-YouTube-VOS root, see data.md'


def choose_holdout(videos: List[str], count: int, seed: int) -> List[str]:
    """`count` of `videos`, drawn with `seed` (independent of the order they are listed in), sorted."""
    if not 0 < count < len(videos):
        raise ValueError(f'--valid_videos {count}: choose between 1 and {len(videos) - 1} '
                         f'(the train set has {len(videos)} videos)')
    return sorted(random.Random(seed).sample(sorted(videos), count))


def link_video(source: Path, target: Path, link: str) -> None:
    """`target` (a video folder) made from the folder `source`: a link to it, hard links of its files, or a copy."""
    if link == 'symlink':
        target.symlink_to(source.resolve(), target_is_directory=True)
    elif link == 'hardlink':
        shutil.copytree(source, target, copy_function=os.link)
    else:
        shutil.copytree(source, target)


def prepare_output(out: Path) -> None:
    """An empty `out`, or one this tool wrote before (emptied); anything else is left alone with an error."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FileExistsError(f'{out} exists and was not written by this tool: not overwriting it')
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def split_holdout(ytvos_path: Path, out: Path, valid_videos: int, seed: int = 0,
                  link: str = 'symlink') -> Dict[str, Tuple[int, int]]:
    """Write the split; returns {split: (videos, expressions)}."""
    if link not in LINKS:
        raise ValueError(f'unknown --link {link!r}: expected one of {LINKS}')
    source = Path(ytvos_path) / 'train'
    for folder in MEDIA:
        require(source / folder, f'train {folder}', HINT)
    objects = read_json(source / 'meta.json', 'train object metadata', HINT)['videos']
    expressions = read_json(Path(ytvos_path) / 'meta_expressions' / 'train' / 'meta_expressions.json',
                            'train expressions', HINT)['videos']
    unknown = sorted(set(expressions) - set(objects))
    if unknown:
        raise ValueError(f'video {unknown[0]} of meta_expressions/train has no entry in {source / "meta.json"}')
    held_out = set(choose_holdout(list(expressions), valid_videos, seed))
    out = Path(out)
    prepare_output(out)
    counts = {}
    for split in ('train', 'valid'):
        videos = sorted(v for v in expressions if (v in held_out) == (split == 'valid'))
        for folder in MEDIA:
            (out / split / folder).mkdir(parents=True)
            for video in videos:
                link_video(require(source / folder / video, f'{folder} of video {video}', HINT),
                           out / split / folder / video, link)
        write_json({'videos': {v: objects[v] for v in videos}}, out / split / 'meta.json')
        write_json({'videos': {v: expressions[v] for v in videos}},
                   out / 'meta_expressions' / split / 'meta_expressions.json')
        counts[split] = (len(videos), sum(len(expressions[v]['expressions']) for v in videos))
    with atomic_write(out / MARKER) as marker:
        marker.write(json.dumps({'source': str(Path(ytvos_path).resolve()), 'valid_videos': valid_videos,
                                 'seed': seed, 'link': link}) + '\n')
    return counts


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ytvos_path', required=True, type=Path, help='the Ref-YouTube-VOS root to split')
    parser.add_argument('--out', required=True, type=Path, help='the root of the split to write')
    parser.add_argument('--valid_videos', default=200, type=int,
                        help='train videos to hold out (the official validation set has 202)')
    parser.add_argument('--seed', default=0, type=int, help='the draw of the held-out videos')
    parser.add_argument('--link', default='symlink', choices=LINKS,
                        help='how frames and masks get into --out: a symbolic link per video folder, a hard link '
                             'per file, or copies')
    return parser


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    if args.out.resolve() == args.ytvos_path.resolve():
        sys.exit('--out must be another folder than --ytvos_path')
    try:
        counts = split_holdout(args.ytvos_path, args.out, args.valid_videos, args.seed, args.link)
    except (OSError, ValueError) as error:
        sys.exit(str(error))
    for split, (videos, expressions) in counts.items():
        print(f'{split}: {videos} videos, {expressions} expressions')
    print(f'written to {args.out} (--ytvos_path {args.out}; evaluate with eval_rvos.py --gt_path {args.out})')


if __name__ == '__main__':
    run(main, list)

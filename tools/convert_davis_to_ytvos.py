"""Convert DAVIS-2017 and the Ref-DAVIS17 sentences to the Ref-YouTube-VOS layout the loaders read.

    python tools/convert_davis_to_ytvos.py --davis_path data/ref-davis

Reads <davis_path>/DAVIS (JPEGImages/480p, Annotations_unsupervised/480p, ImageSets/2017/{train,val}.txt,
davis_semantics.json) and <davis_path>/davis_text_annotations/Davis17_annot{1,1_full_video,2,2_full_video}.txt;
writes <davis_path>/{train,valid}/{JPEGImages,Annotations,meta.json} and
<davis_path>/meta_expressions/{train,valid}/meta_expressions.json. Each object gets one expression per
annotation file, exp_id = object index * 4 + file index (objects counted from 0 in id order). Frames and
masks are hard-linked (copied across file systems), so the DAVIS folder stays as it is for eval_davis.py.
Running it again refreshes the json files and leaves the linked files alone.
"""
import argparse
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from util.cli import run  # noqa: E402
from util.files import read_json, require, write_json  # noqa: E402

ANNOTATION_FILES = ('Davis17_annot1.txt', 'Davis17_annot1_full_video.txt', 'Davis17_annot2.txt',
                    'Davis17_annot2_full_video.txt')
SPLITS = {'train': 'train', 'val': 'valid'}
_LINE = re.compile(r'^(\S+)\s+(\d+)\s+(.*)$')


def read_expressions(path: Path) -> Dict[Tuple[str, str], str]:
    """`(video, obj_id) -> expression` of one annotation file (lines `<video> <obj_id> "<expression>"`,
    UTF-8 or latin-1)."""
    data = require(path, 'Ref-DAVIS17 sentences').read_bytes()
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        text = data.decode('latin-1')
    expressions = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        if match is None:
            raise ValueError(f'{path}:{number}: expected <video> <obj_id> "<expression>", got {line!r}')
        video, obj_id, expression = match.groups()
        expressions[(video, obj_id)] = expression.strip().strip('"').strip()
    return expressions


def link(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def convert_video(davis: Path, out: Path, video: str) -> Tuple[List[str], Dict[str, List[str]]]:
    """Link a video's frames and masks into `out`; returns its frame names and the frames of each object id."""
    image_dir = require(davis / 'JPEGImages' / '480p' / video, f'DAVIS frames of {video}')
    mask_dir = require(davis / 'Annotations_unsupervised' / '480p' / video, f'DAVIS masks of {video}')
    (out / 'JPEGImages' / video).mkdir(parents=True, exist_ok=True)
    (out / 'Annotations' / video).mkdir(parents=True, exist_ok=True)
    frames = sorted(p.stem for p in image_dir.glob('*.jpg'))
    object_frames: Dict[str, List[str]] = {}
    for frame in frames:
        mask_file = require(mask_dir / f'{frame}.png', f'DAVIS mask of {video}')
        link(image_dir / f'{frame}.jpg', out / 'JPEGImages' / video / f'{frame}.jpg')
        link(mask_file, out / 'Annotations' / video / f'{frame}.png')
        for obj_id in np.unique(np.asarray(Image.open(mask_file))):
            if obj_id:
                object_frames.setdefault(str(obj_id), []).append(frame)
    return frames, object_frames


def convert(davis_path: Path) -> None:
    davis_path = Path(davis_path)
    davis = require(davis_path / 'DAVIS', 'DAVIS-2017 folder')
    semantics = read_json(davis / 'davis_semantics.json', 'DAVIS-2017 object categories')
    annotators = [read_expressions(davis_path / 'davis_text_annotations' / name) for name in ANNOTATION_FILES]
    for davis_split, split in SPLITS.items():
        videos = require(davis / 'ImageSets' / '2017' / f'{davis_split}.txt', 'DAVIS-2017 split').read_text().split()
        objects, expressions = {}, {}
        missing = 0
        for video in tqdm(videos, desc=f'Ref-DAVIS17 {split}'):
            if video not in semantics:
                raise KeyError(f'video {video} is not in {davis / "davis_semantics.json"}')
            frames, object_frames = convert_video(davis, davis_path / split, video)
            obj_ids = sorted(semantics[video], key=int)
            objects[video] = {'objects': {obj_id: {'category': semantics[video][obj_id],
                                                   'frames': object_frames.get(obj_id, [])} for obj_id in obj_ids}}
            video_expressions = {}
            for index, obj_id in enumerate(obj_ids):
                for annotator, sentences in enumerate(annotators):
                    if (video, obj_id) in sentences:
                        video_expressions[str(index * 4 + annotator)] = {'exp': sentences[(video, obj_id)],
                                                                         'obj_id': obj_id}
                    else:
                        missing += 1
            expressions[video] = {'expressions': video_expressions, 'frames': frames}
        write_json({'videos': objects}, davis_path / split / 'meta.json')
        write_json({'videos': expressions}, davis_path / 'meta_expressions' / split / 'meta_expressions.json')
        print(f'Ref-DAVIS17 {split}: {len(videos)} videos, '
              f'{sum(len(v["expressions"]) for v in expressions.values())} expressions'
              + (f' ({missing} object/annotator pairs without a sentence)' if missing else ''))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--davis_path', default='data/ref-davis', type=Path)
    convert(parser.parse_args(argv).davis_path)


if __name__ == '__main__':
    run(main, list)

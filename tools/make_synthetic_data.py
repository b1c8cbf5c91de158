"""Tiny synthetic datasets in the exact on-disk layout of every benchmark, and the learnable Ref-Shapes.

    python tools/make_synthetic_data.py --out data/synthetic
    python tools/make_synthetic_data.py --out data/synthetic --benchmarks refshapes --refshapes_train 64

Writes, under --out: ref-youtube-vos/, ref-davis/ (the DAVIS download, then converted in place by
convert_davis_to_ytvos.py), a2d_sentences/, jhmdb_sentences/, coco/ (with refer/, the refer toolkit files
that convert_refexp_to_coco.py turns into coco/refcoco*/), ref-shapes/. Point the --*_path options there (see
data.md). Frames show coloured shapes (circle, square, triangle) moving on a textured background; masks are
the rendered shapes. Deterministic for a given --seed. A benchmark folder that exists without the marker file
of this tool is never overwritten.
"""
import argparse
import csv
import pickle
import shutil
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import h5py
import numpy as np
import pycocotools.mask as mask_util
import scipy.io
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.a2d import prepare_a2d  # noqa: E402
from datasets.jhmdb import prepare_jhmdb  # noqa: E402
from tools.convert_davis_to_ytvos import ANNOTATION_FILES, convert as convert_davis  # noqa: E402
from tools.convert_refexp_to_coco import convert as convert_refexp  # noqa: E402
from util.benchmarks import MEVIS_EXPRESSIONS_FILE, MEVIS_MASKS_FILE, YTVOS_CATEGORIES  # noqa: E402
from util.cli import run  # noqa: E402
from util.files import write_json  # noqa: E402

COLORS = {'red': (220, 40, 40), 'green': (40, 170, 60), 'blue': (40, 80, 225), 'yellow': (235, 205, 40)}
SHAPES = ('circle', 'square', 'triangle')
DIRECTIONS = {'left': (-1, 0), 'right': (1, 0), 'up': (0, -1), 'down': (0, 1)}
TEMPLATES = ('the {color} {shape}', 'the {color} {shape} moving {direction}', 'a {shape} in {color}',
             '{color} {shape} that moves {direction}')
FOLDERS = {'ytvos': 'ref-youtube-vos', 'davis': 'ref-davis', 'a2d': 'a2d_sentences', 'jhmdb': 'jhmdb_sentences',
           'refcoco': 'coco', 'refshapes': 'ref-shapes', 'mevis': 'mevis'}
MARKER = '.synthetic'
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128] + [255] * (3 * 250)


@dataclass
class Sprite:
    """A shape moving in a straight line at constant speed; drawn in frames [first, last)."""
    shape: str
    color: str
    radius: float
    start: Tuple[float, float]
    direction: str
    speed: float
    first: int = 0
    last: int = 10 ** 6

    def center(self, t: int) -> Tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        return self.start[0] + dx * self.speed * t, self.start[1] + dy * self.speed * t

    def draw(self, draw: ImageDraw.ImageDraw, t: int, fill) -> None:
        if not self.first <= t < self.last:
            return
        (x, y), r = self.center(t), self.radius
        if self.shape == 'circle':
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif self.shape == 'square':
            draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
        else:
            draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)


def moving_sprite(rng: np.random.Generator, shape: str, color: str, height: int, width: int, num_frames: int,
                  direction: Optional[str] = None, radius_range: Tuple[float, float] = (0.1, 0.15)) -> Sprite:
    """A sprite that stays inside the frame for `num_frames` frames: its radius (a fraction of the short side
    in `radius_range`), its direction (random unless given), speed and start drawn from `rng`."""
    radius = float(rng.uniform(*radius_range) * min(height, width))
    direction = str(rng.choice(list(DIRECTIONS))) if direction is None else direction
    dx, dy = DIRECTIONS[direction]
    room = (width if dx else height) - 2 * radius - 2
    speed = float(rng.uniform(0.3, 0.6) * room / max(num_frames - 1, 1))
    travel = speed * (num_frames - 1)
    x = rng.uniform(radius + 1 + travel * (dx < 0), width - radius - 1 - travel * (dx > 0))
    y = rng.uniform(radius + 1 + travel * (dy < 0), height - radius - 1 - travel * (dy > 0))
    return Sprite(shape, color, radius, (float(x), float(y)), direction, speed)


def placed(draw: Callable[[], List[Sprite]], num_frames: int, what: str) -> List[Sprite]:
    """The first sprites `draw()` gives (up to 1000 tries) that never touch in any of `num_frames` frames."""
    for _ in range(1000):
        sprites = draw()
        if all(np.hypot(*np.subtract(a.center(t), b.center(t))) > a.radius * 1.5 + b.radius * 1.5 + 2
               for t in range(num_frames) for i, a in enumerate(sprites) for b in sprites[i + 1:]):
            return sprites
    raise RuntimeError(f'cannot place {what}')


def random_sprites(rng: np.random.Generator, count: int, height: int, width: int, num_frames: int) -> List[Sprite]:
    """`count` (<= 3) sprites of distinct colours and shapes that stay inside the frame and never touch."""
    def draw() -> List[Sprite]:
        return [moving_sprite(rng, str(shape), str(color), height, width, num_frames)
                for color, shape in zip(rng.choice(list(COLORS), count, replace=False),
                                        rng.choice(SHAPES, count, replace=False))]
    return placed(draw, num_frames, f'{count} shapes in {height}x{width} frames')


def background(rng: np.random.Generator, height: int, width: int, level: Optional[float] = None) -> np.ndarray:
    """A light grey `[H, W, 3]` uint8 background with a little noise (`level`: its mean grey value)."""
    level = rng.uniform(150, 200) if level is None else level
    return np.clip(level + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)


def render(sprites: Sequence[Sprite], t: int, canvas: np.ndarray) -> Tuple[Image.Image, np.ndarray]:
    """Frame t: the RGB image and its `[H, W]` uint8 id map (sprite k has id k + 1; later sprites on top)."""
    frame = Image.fromarray(canvas)
    ids = Image.new('L', frame.size)
    frame_draw, ids_draw = ImageDraw.Draw(frame), ImageDraw.Draw(ids)
    for k, sprite in enumerate(sprites):
        sprite.draw(frame_draw, t, COLORS[sprite.color])
        sprite.draw(ids_draw, t, k + 1)
    return frame, np.asarray(ids)


def save_palette_png(ids: np.ndarray, path: Path) -> None:
    image = Image.frombytes('P', (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids, np.uint8).tobytes())
    image.putpalette(PALETTE)
    image.save(path)


def video_name(rng: np.random.Generator, length: int = 10, alphabet: str = '0123456789abcdef') -> str:
    return ''.join(rng.choice(list(alphabet), length))


def describe(sprite: Sprite, template: str) -> str:
    return template.format(color=sprite.color, shape=sprite.shape, direction=sprite.direction)


def write_ytvos_video(split_dir: Path, video: str, sprites: Sequence[Sprite], names: Sequence[str],
                      canvas: np.ndarray, masks: bool = True) -> Dict[str, Dict]:
    """Frames (and palette masks) of a video in the Ref-YouTube-VOS layout; returns its meta.json objects."""
    (split_dir / 'JPEGImages' / video).mkdir(parents=True, exist_ok=True)
    if masks:
        (split_dir / 'Annotations' / video).mkdir(parents=True, exist_ok=True)
    objects = {str(k + 1): {'frames': []} for k in range(len(sprites))}
    for t, name in enumerate(names):
        frame, ids = render(sprites, t, canvas)
        frame.save(split_dir / 'JPEGImages' / video / f'{name}.jpg', quality=95)
        if masks:
            save_palette_png(ids, split_dir / 'Annotations' / video / f'{name}.png')
        for obj_id in np.unique(ids[ids > 0]):
            objects[str(obj_id)]['frames'].append(name)
    return objects


def make_ytvos(out: Path, rng: np.random.Generator, args) -> None:
    """Ref-YouTube-VOS: train/ with masks, valid/ frames only; valid and test expressions have no obj_id and
    the valid list also holds the test videos, as in the release."""
    h, w, n = args.height, args.width, args.frames
    train_meta, expressions = {}, {'train': {}, 'valid': {}, 'test': {}}
    for v in range(args.videos):
        video, length = video_name(rng), (3 if v == 0 else n)
        names = [f'{5 * t:05d}' for t in range(length)]
        sprites = random_sprites(rng, 2 + v % 2, h, w, length)
        sprites[-1].first = length // 2
        objects = write_ytvos_video(out / 'train', video, sprites, names, background(rng, h, w))
        for obj in objects.values():
            obj['category'] = str(rng.choice(YTVOS_CATEGORIES))
        train_meta[video] = {'objects': objects}
        expressions['train'][video] = {'frames': names, 'expressions': {
            str(k): {'exp': f'  The {sprite.color.upper()}  {sprite.shape} ', 'obj_id': str(k + 1)}
            for k, sprite in enumerate(sprites)}}
    for v in range(args.videos + 2):
        video, names = video_name(rng), [f'{5 * t:05d}' for t in range(n)]
        sprites = random_sprites(rng, 2, h, w, n)
        write_ytvos_video(out / 'valid', video, sprites, names, background(rng, h, w), masks=False)
        entry = {'frames': names, 'expressions': {
            str(k): {'exp': describe(sprites[k % len(sprites)], str(rng.choice(TEMPLATES)))}
            for k in range(args.ytvos_expressions)}}
        expressions['valid'][video] = entry
        if v >= args.videos:
            expressions['test'][video] = entry
    write_json({'videos': train_meta}, out / 'train' / 'meta.json')
    for split, videos in expressions.items():
        write_json({'videos': videos}, out / 'meta_expressions' / split / 'meta_expressions.json')


def make_refshapes(out: Path, rng: np.random.Generator, args) -> None:
    """Ref-Shapes: Ref-YouTube-VOS layout, train/ and a held-out valid/, both with masks and obj_id; every
    expression names one object by its colour and shape (colours and shapes are distinct within a video)."""
    h, w, n = args.refshapes_height, args.refshapes_width, args.refshapes_frames
    for split, count in (('train', args.refshapes_train), ('valid', args.refshapes_valid)):
        meta, expressions = {}, {}
        for v in range(count):
            video, names = f'{split}_{v:04d}', [f'{t:05d}' for t in range(n)]
            sprites = random_sprites(rng, int(rng.integers(2, 4)), h, w, n)
            objects = write_ytvos_video(out / split, video, sprites, names, background(rng, h, w))
            for obj_id, sprite in zip(objects, sprites):
                objects[obj_id].update(category='others', shape=sprite.shape, color=sprite.color)
            meta[video] = {'objects': objects}
            sentences = [(str(k + 1), describe(sprite, template)) for k, sprite in enumerate(sprites)
                         for template in rng.choice(TEMPLATES, 2, replace=False)]
            expressions[video] = {'frames': names, 'expressions': {
                str(e): {'exp': exp, 'obj_id': obj_id} for e, (obj_id, exp) in enumerate(sentences)}}
        write_json({'videos': meta}, out / split / 'meta.json')
        write_json({'videos': expressions}, out / 'meta_expressions' / split / 'meta_expressions.json')


def make_davis(out: Path, rng: np.random.Generator, args) -> None:
    """The DAVIS-2017 download (480p frames, unsupervised masks, splits, semantics) and the four Ref-DAVIS17
    sentence files (the last one latin-1 encoded), then the conversion to the Ref-YouTube-VOS layout."""
    h, w, n = args.height, args.width, args.frames
    davis = out / 'DAVIS'
    semantics, lines = {}, [[] for _ in ANNOTATION_FILES]
    splits = {'train': [f'shapes-train-{v}' for v in range(args.videos)],
              'val': [f'shapes-val-{v}' for v in range(2)]}
    for video in splits['train'] + splits['val']:
        sprites = random_sprites(rng, 3, h, w, n)
        (davis / 'JPEGImages' / '480p' / video).mkdir(parents=True, exist_ok=True)
        (davis / 'Annotations_unsupervised' / '480p' / video).mkdir(parents=True, exist_ok=True)
        canvas = background(rng, h, w)
        for t in range(n):
            frame, ids = render(sprites, t, canvas)
            frame.save(davis / 'JPEGImages' / '480p' / video / f'{t:05d}.jpg', quality=95)
            save_palette_png(ids, davis / 'Annotations_unsupervised' / '480p' / video / f'{t:05d}.png')
        semantics[video] = {str(k + 1): str(rng.choice(['bear', 'car', 'dog', 'person', 'horse', 'boat']))
                            for k in range(len(sprites))}
        for k, sprite in enumerate(sprites):
            for annotator, prefix in enumerate(('the', 'the moving', 'a', 'a moving')):
                if not (video == splits['train'][0] and k == 2 and annotator == 3):
                    accent = ' (café)' if annotator == 3 else ''
                    lines[annotator].append(f'{video} {k + 1} "{prefix} {sprite.color} {sprite.shape}{accent}"')
    (davis / 'ImageSets' / '2017').mkdir(parents=True, exist_ok=True)
    for split, videos in splits.items():
        (davis / 'ImageSets' / '2017' / f'{split}.txt').write_text('\n'.join(videos) + '\n')
    write_json(semantics, davis / 'davis_semantics.json')
    (out / 'davis_text_annotations').mkdir(parents=True, exist_ok=True)
    for annotator, (name, file_lines) in enumerate(zip(ANNOTATION_FILES, lines)):
        (out / 'davis_text_annotations' / name).write_bytes(
            '\n'.join(file_lines).encode('latin-1' if annotator == 3 else 'utf-8'))
    convert_davis(out)


def write_mp4(frames: Sequence[Image.Image], path: Path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 24, frames[0].size)
    if not writer.isOpened():
        raise RuntimeError(f'OpenCV cannot write {path} (no mp4v encoder?)')
    for frame in frames:
        writer.write(cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2BGR))
    writer.release()


def make_a2d(out: Path, rng: np.random.Generator, args) -> None:
    """A2D-Sentences: mp4 clips, per-frame instance masks in h5 (transposed, 2-D for a single instance), the
    sentence csv, the missed-videos list and videoset.csv; then the derived sample and COCO json files.
    Annotated frames have a bright background so that tests can find them in the clip."""
    h, w = args.height, args.width
    (out / 'Release' / 'clips320H').mkdir(parents=True, exist_ok=True)
    videoset, sentences = [], [['video_id', 'instance_id', 'query']]
    usages = [0] * args.videos + [1, 1, 0]
    for v, usage in enumerate(usages):
        video, n = 'v' + video_name(rng, 10, string.ascii_letters + string.digits + '-_'), args.frames + 4 + v % 3
        sprites = random_sprites(rng, 2, h, w, n)
        sprites[1].last = n - 2
        annotated = [1, n // 2, n - 1] if v % 2 == 0 else [2, n // 2 + 1, n]
        canvas_dark, canvas_bright = background(rng, h, w, 90), background(rng, h, w, 235)
        frames = [render(sprites, t, canvas_bright if t + 1 in annotated else canvas_dark)[0] for t in range(n)]
        write_mp4(frames, out / 'Release' / 'clips320H' / f'{video}.mp4')
        mask_dir = out / 'text_annotations' / 'a2d_annotation_with_instances' / video
        mask_dir.mkdir(parents=True, exist_ok=True)
        for frame in annotated:
            ids = render(sprites, frame - 1, canvas_dark)[1]
            present = [k for k in range(len(sprites)) if (ids == k + 1).any()]
            masks = np.stack([(ids == k + 1).T.astype(np.uint8) for k in present])
            with h5py.File(mask_dir / f'{frame:05d}.h5', 'w') as f:
                f['instance'] = np.array([present], dtype=np.float64)
                f['reMask'] = masks[0] if len(present) == 1 else masks
        videoset.append([video, 11 + v, 0, 10, h, w, n, len(annotated), usage])
        sentences += [[video, str(k), f'The {s.color} {s.shape} is Moving {s.direction}']
                      for k, s in enumerate(sprites)]
    sentences.append([videoset[0][0], '0 (1)', 'a typo in the instance id'])
    missed = videoset[-1][0]
    with open(out / 'Release' / 'videoset.csv', 'w', newline='') as f:
        csv.writer(f).writerows(videoset)
    with open(out / 'text_annotations' / 'a2d_annotation.txt', 'w', newline='') as f:
        csv.writer(f).writerows(sentences)
    (out / 'text_annotations' / 'a2d_missed_videos.txt').write_text(missed + '\n')
    for subset in ('train', 'test'):
        prepare_a2d(out, subset)


def make_jhmdb(out: Path, rng: np.random.Generator, args) -> None:
    """JHMDB-Sentences: png frames (1-based) per class/video, puppet_mask.mat [H, W, T] (one video has fewer
    masks than frames), the sentence csv, then the derived json files. The middle frame, the one the derived
    metadata chooses, has a bright background."""
    h, w = args.height, args.width
    sentences = [['video_id', 'query']]
    for v, action in enumerate(('brush_hair', 'catch', 'pour')):
        video, n = f'{action.title()}_shapes_{v}_u_cm_np1_fr_goo_0', args.frames + v
        num_masks = n - 1 if v == 0 else n
        middle = (num_masks + 1) // 2
        sprites = random_sprites(rng, 1, h, w, n)
        canvas_dark, canvas_bright = background(rng, h, w, 90), background(rng, h, w, 235)
        frame_dir, mask_dir = out / 'Rename_Images' / action / video, out / 'puppet_mask' / action / video
        frame_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        masks = []
        for t in range(n):
            frame, ids = render(sprites, t, canvas_bright if t + 1 == middle else canvas_dark)
            frame.save(frame_dir / f'{t + 1:05d}.png')
            masks.append(ids > 0)
        scipy.io.savemat(mask_dir / 'puppet_mask.mat',
                         {'part_mask': np.stack(masks[:num_masks], -1).astype(np.uint8)})
        sentences.append([video, f'the {sprites[0].color} {sprites[0].shape} moving {sprites[0].direction}'])
    with open(out / 'jhmdb_annotation.txt', 'w', newline='') as f:
        csv.writer(f).writerows(sentences)
    prepare_jhmdb(out)


def make_refcoco(out: Path, rng: np.random.Generator, args) -> None:
    """COCO train2014 images and the refer toolkit's files (refs pickles, instances.json) of RefCOCO, RefCOCO+
    and RefCOCOg, in <out>/refer; then their conversion into <out>/refcoco*/. Circles are RLE masks,
    squares and triangles polygons."""
    h, w = args.height, args.width
    refer = out / 'refer'
    (out / 'train2014').mkdir(parents=True, exist_ok=True)
    categories = {'circle': (37, 'sports ball'), 'square': (62, 'chair'), 'triangle': (38, 'kite')}
    images, annotations = [], []
    for image_id in range(1, 2 * args.videos + 3):
        sprites = random_sprites(rng, 3, h, w, 1)
        frame, ids = render(sprites, 0, background(rng, h, w))
        file_name = f'COCO_train2014_{image_id:012d}.jpg'
        frame.save(out / 'train2014' / file_name, quality=95)
        images.append({'id': image_id, 'file_name': file_name, 'height': h, 'width': w})
        for k, sprite in enumerate(sprites):
            rle = mask_util.encode(np.asfortranarray((ids == k + 1).astype(np.uint8)))
            (x, y), r = sprite.center(0), sprite.radius
            polygon = {'square': [x - r, y - r, x + r, y - r, x + r, y + r, x - r, y + r],
                       'triangle': [x, y - r, x + r, y + r, x - r, y + r]}.get(sprite.shape)
            segmentation = [polygon] if polygon else {'size': rle['size'], 'counts': rle['counts'].decode('ascii')}
            annotations.append({'id': 100 * image_id + k, 'image_id': image_id, 'bbox': mask_util.toBbox(rle).tolist(),
                                'area': float(mask_util.area(rle)), 'iscrowd': 0, 'segmentation': segmentation,
                                'category_id': categories[sprite.shape][0],
                                'sprite': f'{sprite.color} {sprite.shape}'})
    coco_categories = [{'id': i, 'name': name, 'supercategory': 'shape'} for i, name in sorted(categories.values())]
    for name, split_by, test_splits in (('refcoco', 'unc', ['testA', 'testB']), ('refcoco+', 'unc', ['testA']),
                                        ('refcocog', 'umd', ['test'])):
        refs = []
        for ref_id, annotation in enumerate(annotations):
            image_index = annotation['image_id'] - 1
            split = 'val' if image_index % 4 == 3 else 'train'
            if image_index == len(images) - 1:
                split = test_splits[ref_id % len(test_splits)]
            sentences = [f'the {annotation["sprite"]}', f'{annotation["sprite"]} in the picture'][:1 + ref_id % 2]
            refs.append({'ref_id': ref_id, 'ann_id': annotation['id'], 'image_id': annotation['image_id'],
                         'split': split, 'category_id': annotation['category_id'], 'sent_ids': [],
                         'sentences': [{'sent': s, 'raw': s.capitalize() + '.', 'tokens': s.split(),
                                        'sent_id': 1000 * ref_id + i} for i, s in enumerate(sentences)]})
        (refer / name).mkdir(parents=True, exist_ok=True)
        with open(refer / name / f'refs({split_by}).p', 'wb') as f:
            pickle.dump(refs, f)
        write_json({'images': images, 'categories': coco_categories,
                    'annotations': [{k: v for k, v in a.items() if k != 'sprite'} for a in annotations]},
                   refer / name / 'instances.json')
    convert_refexp(refer, out)


# MeViS videos: the sizes of their groups of alike shapes (each group's shapes share shape, colour and direction).
MEVIS_GROUPS = ((1, 1), (2, 1), (3, 1), (2, 2), (1, 1, 1), (2, 1, 1))
MEVIS_COUNTS = {1: 'the', 2: 'two', 3: 'three'}
MEVIS_TEMPLATES = {1: ('the {shape} moving {direction}', 'the {color} {shape}'),
                   2: ('the {count} {shape}s moving {direction}', '{count} {color} {shape}s'),
                   3: ('the {count} {shape}s moving {direction}', 'all {count} {color} {shape}s')}


def mevis_groups(rng: np.random.Generator, height: int, width: int, num_frames: int) -> List[List[Sprite]]:
    """2-3 groups of 1-3 shapes (4 at most in all); groups differ in shape, colour and direction."""
    sizes = MEVIS_GROUPS[int(rng.integers(len(MEVIS_GROUPS)))]
    starts = np.cumsum((0,) + sizes)

    def draw() -> List[Sprite]:
        kinds = zip(rng.choice(SHAPES, len(sizes), replace=False), rng.choice(list(COLORS), len(sizes), replace=False),
                    rng.choice(list(DIRECTIONS), len(sizes), replace=False))
        return [moving_sprite(rng, str(shape), str(color), height, width, num_frames, str(direction), (0.07, 0.1))
                for (shape, color, direction), size in zip(kinds, sizes) for _ in range(size)]
    sprites = placed(draw, num_frames, f'{sum(sizes)} shapes in {height}x{width} frames')
    return [sprites[a:b] for a, b in zip(starts[:-1], starts[1:])]


def rle(mask: np.ndarray) -> Dict:
    """A bool mask `[H, W]` as a COCO RLE with string counts, as json holds it."""
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': [int(n) for n in encoded['size']], 'counts': encoded['counts'].decode('ascii')}


def make_mevis(out: Path, rng: np.random.Generator, args) -> None:
    """MeViS: train/ and valid_u/ (JPEGImages, meta_expressions.json with obj_id and anno_id lists, mask_dict.json:
    per anno_id a COCO RLE per frame, null where the object is absent) and valid/ (frames and sentences only).
    Each video shows 2-3 groups of 1-3 alike shapes, each group with two sentences naming all of its shapes ("the
    two circles moving left", "two red circles"); in every other video one shape enters halfway, in every third
    one shape leaves two frames before the end. The first sentence of each training video is written with capitals
    and extra spaces, as raw sentences can be."""
    h, w, n = args.mevis_height, args.mevis_width, args.mevis_frames
    names = [f'{t:05d}' for t in range(n)]
    for split, count in (('train', args.mevis_train), ('valid_u', args.mevis_valid_u), ('valid', args.mevis_valid)):
        videos, masks = {}, {}
        for v in range(count):
            video = f'{split}_{v:04d}'
            groups = mevis_groups(rng, h, w, n)
            sprites = [sprite for group in groups for sprite in group]
            if v % 2 == 0:
                sprites[-1].first = n // 2
            if v % 3 == 0:
                sprites[0].last = n - 2
            (out / split / 'JPEGImages' / video).mkdir(parents=True, exist_ok=True)
            canvas = background(rng, h, w)
            anno_ids = [len(masks) + k for k in range(len(sprites))]
            for anno_id in anno_ids:
                masks[str(anno_id)] = []
            for t, name in enumerate(names):
                frame, ids = render(sprites, t, canvas)
                frame.save(out / split / 'JPEGImages' / video / f'{name}.jpg', quality=95)
                for k, anno_id in enumerate(anno_ids):
                    masks[str(anno_id)].append(rle(ids == k + 1) if (ids == k + 1).any() else None)
            expressions, first = {}, 0
            for group in groups:
                members = list(range(first, first + len(group)))
                first += len(group)
                lead = group[0]
                for template in MEVIS_TEMPLATES[len(group)]:
                    sentence = template.format(count=MEVIS_COUNTS[len(group)], shape=lead.shape, color=lead.color,
                                               direction=lead.direction)
                    if split == 'train' and not expressions:
                        sentence = '  ' + sentence.capitalize().replace(' ', '  ', 1) + ' '
                    entry = {'exp': sentence}
                    if split != 'valid':
                        entry.update(obj_id=members, anno_id=[anno_ids[k] for k in members])
                    expressions[str(len(expressions))] = entry
            videos[video] = {'frames': names, 'expressions': expressions}
        write_json({'videos': videos}, out / split / MEVIS_EXPRESSIONS_FILE)
        if split != 'valid':
            write_json(masks, out / split / MEVIS_MASKS_FILE)


MAKERS: Dict[str, Callable] = {'ytvos': make_ytvos, 'davis': make_davis, 'a2d': make_a2d, 'jhmdb': make_jhmdb,
                               'refcoco': make_refcoco, 'refshapes': make_refshapes, 'mevis': make_mevis}


def make(out: Path, benchmarks: Sequence[str], args) -> Dict[str, Path]:
    """Generate `benchmarks` under `out`; returns their folders."""
    folders = {}
    for offset, benchmark in enumerate(MAKERS):
        if benchmark not in benchmarks:
            continue
        folder = Path(out) / FOLDERS[benchmark]
        if folder.exists() and any(folder.iterdir()):
            if not (folder / MARKER).exists():
                raise FileExistsError(f'{folder} exists and was not made by this tool: not overwriting it')
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text('made by tools/make_synthetic_data.py\n')
        MAKERS[benchmark](folder, np.random.default_rng([args.seed, offset]), args)
        folders[benchmark] = folder
    return folders


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, type=Path)
    parser.add_argument('--benchmarks', nargs='+', default=list(MAKERS), choices=list(MAKERS))
    parser.add_argument('--seed', default=0, type=int)
    parser.add_argument('--videos', default=3, type=int, help='videos (images: twice as many) per split')
    parser.add_argument('--frames', default=8, type=int, help='frames per video')
    parser.add_argument('--height', default=64, type=int)
    parser.add_argument('--width', default=96, type=int)
    parser.add_argument('--ytvos_expressions', default=2, type=int,
                        help='expressions per Ref-YouTube-VOS valid video (its 2 objects in turn, a template each)')
    parser.add_argument('--refshapes_train', default=64, type=int, help='Ref-Shapes training videos')
    parser.add_argument('--refshapes_valid', default=16, type=int, help='Ref-Shapes held-out videos')
    parser.add_argument('--refshapes_frames', default=8, type=int)
    parser.add_argument('--refshapes_height', default=96, type=int)
    parser.add_argument('--refshapes_width', default=128, type=int)
    parser.add_argument('--mevis_train', default=48, type=int, help='MeViS training videos')
    parser.add_argument('--mevis_valid_u', default=12, type=int, help='MeViS valid_u videos (with masks)')
    parser.add_argument('--mevis_valid', default=4, type=int, help='MeViS valid videos (no masks)')
    parser.add_argument('--mevis_frames', default=8, type=int)
    parser.add_argument('--mevis_height', default=96, type=int)
    parser.add_argument('--mevis_width', default=128, type=int)
    return parser


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    start = time.time()
    for benchmark, folder in make(args.out, args.benchmarks, args).items():
        print(f'{benchmark}: {folder}')
    print(f'done in {time.time() - start:.1f}s')


if __name__ == '__main__':
    run(main, list)

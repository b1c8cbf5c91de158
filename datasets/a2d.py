"""A2D-Sentences: clips around the one annotated frame of each (frame, referred actor) pair.

    <root>/Release/clips320H/<video>.mp4
    <root>/Release/videoset.csv                      no header; first column video id, last column 0 train / 1 test
    <root>/text_annotations/a2d_annotation.txt       csv with header video_id,instance_id,query
    <root>/text_annotations/a2d_missed_videos.txt    one video id per line, not used
    <root>/text_annotations/a2d_annotation_with_instances/<video>/<frame:05d>.h5
                                                     'instance' (ids), 'reMask' (masks, last two axes transposed)
    <root>/a2d_sentences_single_frame_{train,test}_annotations.json   [query, video, frame (1-based), instance]
    <root>/a2d_sentences_test_annotations_in_coco_format.json         COCO ground truth of the test samples

The two kinds of json are created from the others when missing.
"""
import csv
from pathlib import Path
from typing import Dict, List, Sequence

import cv2
import h5py
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from util.benchmarks import COCO_GROUND_TRUTH_FILES
from util.files import read_json, require, write_json
from .clip_dataset import ClipDataset
from .coco_gt import write_coco_ground_truth
from .sampling import centred_window, sample_train_frames
from .targets import clip_target
from .transforms_video import make_video_transforms

SUBSET_USAGE = {'train': 0, 'test': 1}
SAMPLES_FILE = 'a2d_sentences_single_frame_{}_annotations.json'


def a2d_image_id(video: str, frame: int, instance: int) -> str:
    return f'v_{video}_f_{frame}_i_{instance}'


def h5_instance_ids(path: Path) -> List[int]:
    with h5py.File(path, 'r') as f:
        return [int(i) for i in np.asarray(f['instance']).ravel()]


def h5_instance_mask(path: Path, instance: int) -> np.ndarray:
    """The `[H, W]` bool mask of `instance` in an annotated frame (h5 masks are stored `[N, W, H]`, or `[W, H]`
    for a single instance)."""
    ids = h5_instance_ids(require(path, 'A2D-Sentences frame annotation'))
    if instance not in ids:
        raise KeyError(f'instance {instance} is not annotated in {path} (instances: {ids})')
    with h5py.File(path, 'r') as f:
        masks = np.asarray(f['reMask'])
    if masks.ndim == 2:
        masks = masks[None]
    return masks[ids.index(instance)].T > 0


def video_length(path: Path) -> int:
    """Number of frames the container declares (checked while decoding)."""
    capture = cv2.VideoCapture(str(require(path, 'A2D-Sentences video')))
    length = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    if length <= 0:
        raise RuntimeError(f'cannot decode the video {path}')
    return length


def read_video_frames(path: Path, indices: Sequence[int]) -> List[Image.Image]:
    """The frames `indices` (0-based) of a video, decoded by reading it sequentially up to the last one."""
    capture = cv2.VideoCapture(str(path))
    wanted, decoded = set(indices), {}
    for index in range(max(indices) + 1):
        if not capture.grab():
            capture.release()
            raise RuntimeError(f'cannot decode frame {index} of the video {path} (frames needed: up to '
                               f'{max(indices)}; the file may be truncated or its frame count wrong)')
        if index in wanted:
            _, frame = capture.retrieve()
            decoded[index] = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return [decoded[i] for i in indices]


def a2d_samples(root: Path, subset: str) -> List[list]:
    """[query (lower-cased), video, frame (1-based), instance] for every sentence of a video of `subset` and
    every annotated frame where its instance appears, in the order of a2d_annotation.txt then of the frames.

    Videos listed in a2d_missed_videos.txt and instance ids that are not integers (one known typo) are skipped.
    """
    text_dir = root / 'text_annotations'
    with open(require(root / 'Release' / 'videoset.csv', 'A2D video list')) as f:
        usage = {row[0]: int(row[-1]) for row in csv.reader(f) if row and row[-1].strip().isdigit()}
    missed = set(require(text_dir / 'a2d_missed_videos.txt', 'A2D missed videos list').read_text().split())
    videos = {video for video, use in usage.items() if use == SUBSET_USAGE[subset] and video not in missed}
    mask_dir = require(text_dir / 'a2d_annotation_with_instances', 'A2D-Sentences instance masks')
    with open(require(text_dir / 'a2d_annotation.txt', 'A2D-Sentences sentences')) as f:
        rows = list(csv.DictReader(f))
    annotated: Dict[str, list] = {}
    samples = []
    for row in tqdm(rows, desc=f'A2D-Sentences {subset} samples'):
        video, instance = row['video_id'], row['instance_id'].strip()
        if video not in videos or not instance.isdigit():
            continue
        if video not in annotated:
            annotated[video] = [(int(p.stem), h5_instance_ids(p)) for p in sorted((mask_dir / video).glob('*.h5'))]
        samples += [[row['query'].lower(), video, frame, int(instance)]
                    for frame, ids in annotated[video] if int(instance) in ids]
    return samples


def prepare_a2d(root: Path, subset: str) -> Path:
    """Create the samples json of `subset` (and the COCO ground truth of 'test') if missing; returns the former."""
    samples_file = root / SAMPLES_FILE.format(subset)
    if not samples_file.exists():
        write_json(a2d_samples(root, subset), samples_file)
    ground_truth = root / COCO_GROUND_TRUTH_FILES['a2d']
    if subset == 'test' and not ground_truth.exists():
        mask_dir = root / 'text_annotations' / 'a2d_annotation_with_instances'
        samples = tqdm(read_json(samples_file, 'A2D-Sentences test samples'), desc='A2D-Sentences COCO ground truth')
        write_coco_ground_truth(((a2d_image_id(video, frame, instance),
                                  h5_instance_mask(mask_dir / video / f'{frame:05d}.h5', instance))
                                 for _, video, frame, instance in samples), ground_truth)
    return samples_file


class A2DSentences(ClipDataset):
    """Items: frames `[T, 3, H, W]` around the annotated frame; only that frame is labelled (T' = 1):
    `valid_indices` is its position among the T frames and `image_id` names it for the COCO evaluation."""

    def __init__(self, root: Path, subset: str, transforms, num_frames: int, max_skip: int, train: bool):
        super().__init__(transforms, train)
        root = Path(root)
        self.video_dir = require(root / 'Release' / 'clips320H', 'A2D videos')
        self.mask_dir = require(root / 'text_annotations' / 'a2d_annotation_with_instances',
                                'A2D-Sentences instance masks')
        self.samples = read_json(prepare_a2d(root, subset), f'A2D-Sentences {subset} samples')
        self.num_frames, self.max_skip = num_frames, max_skip

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, idx: int):
        query, video, frame, instance = self.samples[idx]
        path = self.video_dir / f'{video}.mp4'
        length, anchor = video_length(path), frame - 1
        if self.train:
            frames_idx = sample_train_frames(anchor, length, self.num_frames, self.max_skip)
        else:
            frames_idx = centred_window(anchor, 0, length - 1, self.num_frames)
        frames = read_video_frames(path, frames_idx)
        mask = h5_instance_mask(self.mask_dir / video / f'{frame:05d}.h5', instance)
        if mask.shape != (frames[0].height, frames[0].width):
            raise ValueError(f'{video} frame {frame}: mask {mask.shape} and video frame '
                             f'{(frames[0].height, frames[0].width)} differ in size')
        target = clip_target(torch.from_numpy(mask)[None], 0, frames_idx, query)
        target['valid_indices'] = torch.tensor([frames_idx.index(anchor)])
        target['image_id'] = a2d_image_id(video, frame, instance)
        return frames, target


def build(image_set: str, args) -> A2DSentences:
    """'train' reads the train subset, 'val' the test subset."""
    subset = 'train' if image_set == 'train' else 'test'
    transforms = make_video_transforms(image_set, args.max_size, args.photometric)
    return A2DSentences(Path(args.a2d_path), subset, transforms,
                        args.num_frames, args.max_skip, train=image_set == 'train')

"""JHMDB-Sentences (evaluation only): the window of frames centred on one annotated frame per sentence.

    <root>/Rename_Images/<class>/<video>/<frame:05d>.png    frames, 1-based
    <root>/puppet_mask/<class>/<video>/puppet_mask.mat      'part_mask' [H, W, T]
    <root>/jhmdb_annotation.txt                             csv: a header line, then video_id,query
    <root>/jhmdb_sentences_samples_metadata.json            [video, frame path, mask path, total frames, query]
    <root>/jhmdb_sentences_gt_annotations_in_coco_format.json

The two json files are created from the others when missing; the chosen frame is then the middle one of the
frames that have a mask.
"""
import csv
from pathlib import Path
from typing import List, Tuple

import numpy as np
import scipy.io
import torch
from PIL import Image
from tqdm import tqdm

from util.benchmarks import COCO_GROUND_TRUTH_FILES
from util.files import read_json, require, write_json
from .clip_dataset import ClipDataset
from .coco_gt import write_coco_ground_truth
from .sampling import centred_window
from .targets import clip_target
from .transforms_video import make_video_transforms

METADATA_FILE = 'jhmdb_sentences_samples_metadata.json'


def jhmdb_image_id(video: str, frame: int) -> str:
    return f'v_{video}_f_{frame}'


def read_part_masks(path: Path) -> np.ndarray:
    """`[T, H, W]` puppet masks of a video."""
    return scipy.io.loadmat(str(require(path, 'JHMDB puppet mask')))['part_mask'].transpose(2, 0, 1)


def under_root(root: Path, path: str, folder: str) -> Path:
    """`path` (relative or from another machine) re-rooted at `root` from its component `folder` on."""
    parts = Path(path).parts
    if folder not in parts:
        raise ValueError(f'{path} in {METADATA_FILE} does not go through a {folder} folder')
    return root.joinpath(*parts[parts.index(folder):])


def jhmdb_samples(root: Path) -> List[list]:
    """One sample per sentence: its video's middle frame among those with a mask."""
    video_dirs = {p.name: p for p in require(root / 'Rename_Images', 'JHMDB frames').glob('*/*') if p.is_dir()}
    with open(require(root / 'jhmdb_annotation.txt', 'JHMDB-Sentences sentences')) as f:
        rows = list(csv.reader(f))[1:]
    samples = []
    for video, query in tqdm([row for row in rows if row], desc='JHMDB-Sentences samples'):
        if video not in video_dirs:
            raise FileNotFoundError(f'frames of the JHMDB video {video} not found: expected '
                                    f'{root / "Rename_Images" / "<class>" / video}')
        action = video_dirs[video].parent.name
        masks_path = f'puppet_mask/{action}/{video}/puppet_mask.mat'
        total = min(len(list(video_dirs[video].glob('*.png'))), len(read_part_masks(root / masks_path)))
        samples.append([video, f'Rename_Images/{action}/{video}/{(total + 1) // 2:05d}.png', masks_path, total,
                        query])
    return samples


def chosen_frame(root: Path, frame_path: str, masks_path: str) -> Tuple[Path, int, np.ndarray]:
    """A sample's chosen frame: its file, its 1-based number and its `[H, W]` bool mask."""
    frame_file = under_root(root, frame_path, 'Rename_Images')
    chosen = int(frame_file.stem)
    return frame_file, chosen, read_part_masks(under_root(root, masks_path, 'puppet_mask'))[chosen - 1] > 0


def prepare_jhmdb(root: Path) -> Path:
    """Create the samples metadata and the COCO ground truth if missing; returns the former."""
    metadata_file = root / METADATA_FILE
    if not metadata_file.exists():
        write_json(jhmdb_samples(root), metadata_file)
    ground_truth_file = root / COCO_GROUND_TRUTH_FILES['jhmdb']
    if not ground_truth_file.exists():
        ground_truth = []
        for video, frame_path, masks_path, _, _ in tqdm(read_json(metadata_file, 'JHMDB-Sentences samples'),
                                                        desc='JHMDB-Sentences COCO ground truth'):
            _, chosen, mask = chosen_frame(root, frame_path, masks_path)
            ground_truth.append((jhmdb_image_id(video, chosen), mask))
        write_coco_ground_truth(ground_truth, ground_truth_file)
    return metadata_file


class JHMDBSentences(ClipDataset):
    """Items: frames `[T, 3, H, W]` centred on the chosen frame (edge frames repeated); only that frame is
    labelled (T' = 1, `valid_indices`, `image_id`). `frames_idx` are 0-based (file number - 1)."""

    def __init__(self, root: Path, transforms, num_frames: int):
        super().__init__(transforms, train=False)
        self.root = Path(root)
        self.samples = read_json(prepare_jhmdb(self.root), 'JHMDB-Sentences samples')
        self.num_frames = num_frames

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, idx: int):
        video, frame_path, masks_path, total, query = self.samples[idx]
        frame_file, chosen, mask = chosen_frame(self.root, frame_path, masks_path)
        window = centred_window(chosen, 1, total, self.num_frames)
        frames = [Image.open(frame_file.parent / f'{i:05d}.png').convert('RGB') for i in window]
        if mask.shape != (frames[0].height, frames[0].width):
            raise ValueError(f'{video} frame {chosen}: mask {mask.shape} and frame '
                             f'{(frames[0].height, frames[0].width)} differ in size')
        target = clip_target(torch.from_numpy(mask)[None], 0, [i - 1 for i in window], query)
        target['valid_indices'] = torch.tensor([window.index(chosen)])
        target['image_id'] = jhmdb_image_id(video, chosen)
        return frames, target


def build(image_set: str, args) -> JHMDBSentences:
    if image_set == 'train':
        raise ValueError('JHMDB-Sentences is evaluation-only: train on A2D-Sentences (--dataset_file a2d) and '
                         'evaluate with --dataset_file jhmdb --eval')
    return JHMDBSentences(Path(args.jhmdb_path), make_video_transforms('val', args.max_size), args.num_frames)

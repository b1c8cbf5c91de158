"""Clip transforms (DETR style). Each maps `(frames, target)` to the same; one random draw of geometry is
shared by all frames of the clip.

frames: a list of T PIL images until `Normalize`, which stacks them into `[T, 3, H, W]`.
target: `boxes [T', 4]` xyxy pixels, `masks [T', H, W]` bool, `valid [T']`, `caption`, `size` (h, w);
`Normalize` turns the boxes into cxcywh normalised by the frame size and the masks into float.
"""
import random
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as nnf
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from util.box_ops import box_xyxy_to_cxcywh
from util.video_io import EVAL_SHORT_SIDE, IMAGENET_MEAN, IMAGENET_STD

Frames = List[Image.Image]
TRAIN_SCALES = [288, 320, 352, 392, 416, 448, 480, 512]
VAL_MAX_SIZE = 640
_LEFT_RIGHT = re.compile(r'\b(left|right)\b')


def swap_left_right(caption: str) -> str:
    """Exchange the whole words "left" and "right" (a horizontal flip changes which side is meant)."""
    return _LEFT_RIGHT.sub(lambda word: 'right' if word.group(1) == 'left' else 'left', caption)


def resized_shape(height: int, width: int, size: int, max_size: Optional[int] = None) -> Tuple[int, int]:
    """(h, w) with the short side `size`, lowered so that the long side stays within `max_size`."""
    short, long = min(height, width), max(height, width)
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if short == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize(frames: Frames, target: Dict, size: int, max_size: Optional[int] = None) -> Tuple[Frames, Dict]:
    """Frames bilinear, boxes scaled, masks `[T', H, W]` nearest, to `resized_shape(H, W, size, max_size)`."""
    width, height = frames[0].size
    new_h, new_w = resized_shape(height, width, size, max_size)
    frames = [F.resize(frame, [new_h, new_w]) for frame in frames]
    target = dict(target)
    target['boxes'] = target['boxes'] * torch.tensor([new_w / width, new_h / height] * 2)
    target['masks'] = nnf.interpolate(target['masks'][:, None].float(), (new_h, new_w), mode='nearest')[:, 0] > 0.5
    target['size'] = torch.tensor([new_h, new_w])
    return frames, target


def crop(frames: Frames, target: Dict, top: int, left: int, height: int, width: int) -> Tuple[Frames, Dict]:
    """Frames and masks cropped; boxes shifted and clamped to the crop (they may become degenerate)."""
    frames = [F.crop(frame, top, left, height, width) for frame in frames]
    target = dict(target)
    boxes = (target['boxes'] - torch.tensor([left, top, left, top])).view(-1, 2, 2)
    target['boxes'] = torch.minimum(boxes, torch.tensor([width, height], dtype=boxes.dtype)).clamp(min=0).view(-1, 4)
    target['masks'] = target['masks'][:, top:top + height, left:left + width]
    target['size'] = torch.tensor([height, width])
    return frames, target


def hflip(frames: Frames, target: Dict) -> Tuple[Frames, Dict]:
    """Frames, boxes and masks mirrored; "left" and "right" exchanged in the caption."""
    width = frames[0].size[0]
    frames = [F.horizontal_flip(frame) for frame in frames]
    target = dict(target)
    x1, y1, x2, y2 = target['boxes'].unbind(-1)
    target['boxes'] = torch.stack([width - x2, y1, width - x1, y2], -1)
    target['masks'] = target['masks'].flip(-1)
    target['caption'] = swap_left_right(target['caption'])
    return frames, target


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = transforms

    def __call__(self, frames, target):
        for transform in self.transforms:
            frames, target = transform(frames, target)
        return frames, target


class RandomSelect:
    """`first` with probability p, else `second`."""

    def __init__(self, first: Callable, second: Callable, p: float = 0.5):
        self.first, self.second, self.p = first, second, p

    def __call__(self, frames, target):
        return (self.first if random.random() < self.p else self.second)(frames, target)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, frames, target):
        return hflip(frames, target) if random.random() < self.p else (frames, target)


PHOTOMETRIC_MODES = ('ssd', 'brightness_contrast', 'none')


class PhotometricDistort:
    """Photometric jitter drawn for each frame. 'ssd' (the original): SSD-style brightness / contrast /
    saturation / hue / channel-order jitter; 'brightness_contrast': only its brightness and contrast draws
    (same ranges and probability), so that the colours stay those a caption names. (The mode 'none' of
    `PHOTOMETRIC_MODES` is no transform at all.)"""

    def __init__(self, mode: str = 'ssd'):
        if mode == 'ssd':
            self.distort = v2.RandomPhotometricDistort()
        elif mode == 'brightness_contrast':
            ssd = v2.RandomPhotometricDistort()
            self.distort = v2.Compose([v2.RandomApply([v2.ColorJitter(brightness=ssd.brightness)], p=ssd.p),
                                       v2.RandomApply([v2.ColorJitter(contrast=ssd.contrast)], p=ssd.p)])
        else:
            raise ValueError(f"unknown photometric mode {mode!r}: expected 'ssd' or 'brightness_contrast'")

    def __call__(self, frames, target):
        return [self.distort(frame) for frame in frames], target


class RandomResize:
    """Short side drawn from `sizes`, long side at most `max_size`."""

    def __init__(self, sizes: Sequence[int], max_size: Optional[int] = None):
        self.sizes, self.max_size = list(sizes), max_size

    def __call__(self, frames, target):
        return resize(frames, target, random.choice(self.sizes), self.max_size)


class RandomSizeCrop:
    """A crop of random height and width in [min_size, max_size] (at most the frame), at a random place."""

    def __init__(self, min_size: int, max_size: int):
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, frames, target):
        width, height = frames[0].size
        crop_w = random.randint(min(self.min_size, width), min(width, self.max_size))
        crop_h = random.randint(min(self.min_size, height), min(height, self.max_size))
        top, left = random.randint(0, height - crop_h), random.randint(0, width - crop_w)
        return crop(frames, target, top, left, crop_h, crop_w)


class Check:
    """Frames whose object left the crop (degenerate box or empty mask) get a zero box and valid 0."""

    def __call__(self, frames, target):
        target = dict(target)
        boxes = target['boxes']
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & target['masks'].flatten(1).any(1)
        target['boxes'] = boxes * keep[:, None]
        target['valid'] = target['valid'] * keep
        return frames, target


class Normalize:
    """Frames -> `[T, 3, H, W]` float normalised with the ImageNet mean/std; boxes -> cxcywh in [0, 1]."""

    def __call__(self, frames, target) -> Tuple[Tensor, Dict]:
        video = torch.stack([F.normalize(F.to_dtype(F.to_image(frame), torch.float32, scale=True),
                                         IMAGENET_MEAN, IMAGENET_STD) for frame in frames])
        height, width = video.shape[-2:]
        target = dict(target)
        target['boxes'] = box_xyxy_to_cxcywh(target['boxes']) / torch.tensor([width, height, width, height])
        target['masks'] = target['masks'].float()
        return video, target


def make_video_transforms(image_set: str, max_size: int = VAL_MAX_SIZE, photometric: str = 'ssd') -> Compose:
    """Training: flip, photometric distortion (`photometric`: a mode of `PhotometricDistort`, or 'none'),
    multi-scale resize or resize + crop + resize, check (long side at most `max_size`); evaluation: short side
    360, long side at most 640 (or `max_size` if smaller)."""
    if image_set == 'train':
        return Compose([
            RandomHorizontalFlip(),
            *([] if photometric == 'none' else [PhotometricDistort(photometric)]),
            RandomSelect(
                Compose([RandomResize(TRAIN_SCALES, max_size), Check()]),
                Compose([RandomResize([400, 500, 600]), RandomSizeCrop(384, 600),
                         RandomResize(TRAIN_SCALES, max_size), Check()]),
            ),
            Normalize(),
        ])
    if image_set == 'val':
        return Compose([RandomResize([EVAL_SHORT_SIDE], min(VAL_MAX_SIZE, max_size)), Normalize()])
    raise ValueError(f"unknown image_set {image_set!r}: expected 'train' or 'val'")

"""Clip transforms: resize rule, flip (and the caption's left/right), crop + check, photometric modes,
normalisation."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.targets import clip_target, mask_boxes
from datasets.transforms_video import (Check, Normalize, PhotometricDistort, crop, hflip, make_video_transforms,
                                       resize, resized_shape, swap_left_right)
from opts import get_args_parser
from util.box_ops import box_cxcywh_to_xyxy
from util.video_io import IMAGENET_MEAN, IMAGENET_STD


def make_clip(height=60, width=80, boxes=((10, 20, 30, 40), (50, 5, 70, 25), None)):
    """Frames whose pixels encode their column (red) and row (green) and a rectangle mask per frame
    (`None`: absent)."""
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([cols * 255 // (width - 1), rows * 255 // (height - 1), np.full_like(cols, 128)], -1)
    frames = [Image.fromarray(pixels.astype(np.uint8)) for _ in boxes]
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for k, box in enumerate(boxes):
        if box is not None:
            x1, y1, x2, y2 = box
            masks[k, y1:y2 + 1, x1:x2 + 1] = True
    return frames, clip_target(masks, 3, list(range(len(boxes))), 'The  man on the LEFT')


def test_swap_left_right_whole_words_only():
    assert swap_left_right('the left dog and the right cat') == 'the right dog and the left cat'
    assert swap_left_right('left-most, right.') == 'right-most, left.'
    assert swap_left_right('leftover bright rights') == 'leftover bright rights'


@pytest.mark.parametrize('size, max_size, shape, expected', [
    (360, 640, (720, 1280), (360, 640)),    # the val rule on a 720p video
    (360, 640, (1280, 720), (640, 360)),    # portrait
    (360, 640, (480, 1440), (213, 639)),    # a very wide frame: the long side is capped
    (360, None, (480, 1440), (360, 1080)),
    (288, 640, (288, 500), (288, 500)),     # already the right short side: unchanged
    (512, 640, (300, 400), (480, 640)),
    (400, None, (64, 96), (400, 600)),
])
def test_resized_shape(size, max_size, shape, expected):
    assert resized_shape(*shape, size, max_size) == expected
    if max_size is not None:
        assert max(resized_shape(*shape, size, max_size)) <= max_size


def test_resize_scales_frames_boxes_and_masks():
    frames, target = make_clip()
    frames, out = resize(frames, target, 120)
    assert frames[0].size == (160, 120) and out['size'].tolist() == [120, 160]
    assert out['masks'].shape == (3, 120, 160) and out['masks'].dtype == torch.bool
    assert torch.allclose(out['boxes'], target['boxes'] * 2)
    assert torch.equal(out['masks'][:, ::2, ::2], target['masks'])
    assert out['orig_size'].tolist() == [60, 80]


def test_hflip_moves_boxes_masks_and_caption():
    frames, target = make_clip()
    flipped, out = hflip(frames, target)
    assert np.array_equal(np.asarray(flipped[0]), np.asarray(frames[0])[:, ::-1])
    assert torch.equal(out['masks'], target['masks'].flip(-1))
    assert out['boxes'][0].tolist() == [80 - 30, 20, 80 - 10, 40]
    # flipped boxes agree with the flipped masks up to the inclusive-max pixel convention
    assert torch.allclose(out['boxes'][:2], mask_boxes(out['masks'][:2]) + torch.tensor([1., 0, 1, 0]))
    assert out['caption'] == 'the man on the right'


def test_crop_then_check_invalidates_objects_outside():
    frames, target = make_clip()
    frames, out = Check()(*crop(frames, target, top=0, left=0, height=45, width=40))
    assert frames[0].size == (40, 45) and out['size'].tolist() == [45, 40]
    assert out['boxes'][0].tolist() == [10, 20, 30, 40]
    assert out['valid'].tolist() == [1, 0, 0]          # frame 1's object is right of the crop, frame 2 has none
    assert out['boxes'][1:].abs().sum() == 0
    assert torch.equal(out['masks'], target['masks'][:, :45, :40])


def test_check_invalidates_a_clipped_box():
    frames, target = make_clip()
    _, out = Check()(*crop(frames, target, top=0, left=31, height=60, width=49))
    assert out['valid'].tolist() == [0, 1, 0]   # frame 0's box ends at x=30: degenerate after the crop


def test_normalize_outputs():
    frames, target = make_clip()
    video, out = Normalize()(frames, target)
    assert video.shape == (3, 3, 60, 80) and video.dtype == torch.float32
    expected = (torch.tensor([0, 0, 128]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(video[0, :, 0, 0], expected, atol=1e-6)
    assert torch.allclose(out['boxes'][0], torch.tensor([20 / 80, 30 / 60, 20 / 80, 20 / 60]))
    assert out['boxes'][2].tolist() == [0, 0, 0, 0]
    assert out['masks'].dtype == torch.float32


def test_val_transform_is_deterministic_resize_to_360():
    frames, target = make_clip(height=720 // 8, width=1280 // 8)
    video, out = make_video_transforms('val')(frames, target)
    assert video.shape == (3, 3, 360, 640) and out['size'].tolist() == [360, 640]
    assert out['caption'] == target['caption']


def test_val_transform_respects_a_smaller_max_size():
    frames, target = make_clip(height=96, width=128)
    assert make_video_transforms('val', max_size=160)(frames, target)[0].shape[-2:] == (120, 160)
    assert make_video_transforms('val', max_size=1333)(frames, target)[0].shape[-2:] == (360, 480)


def test_train_transform_keeps_boxes_on_masks():
    """Whatever the random draws, valid boxes follow the masks, other boxes are zero, sizes agree."""
    random.seed(0)
    torch.manual_seed(0)
    for _ in range(12):
        frames, target = make_clip()
        video, out = make_video_transforms('train', max_size=640)(frames, target)
        height, width = video.shape[-2:]
        assert max(height, width) <= 640 and out['size'].tolist() == [height, width]
        assert out['masks'].shape == (3, height, width)
        assert ((out['boxes'] >= 0) & (out['boxes'] <= 1)).all()
        valid = out['valid'].bool()
        assert not valid[2] and out['boxes'][~valid].abs().sum() == 0
        assert (out['masks'].flatten(1).any(1) >= valid).all()
        # boxes keep the inclusive-max convention of the original: off from the mask extent by at most one
        # source pixel, i.e. up to ~14 pixels after the largest upscaling
        boxes = box_cxcywh_to_xyxy(out['boxes'][valid]) * torch.tensor([width, height, width, height])
        assert torch.allclose(boxes, mask_boxes(out['masks'][valid].bool()), atol=14)
        assert out['caption'] in ('the man on the left', 'the man on the right')


def test_unknown_image_set():
    with pytest.raises(ValueError, match='image_set'):
        make_video_transforms('test')


def dominant_channels(mode, draws=60):
    """The strongest channel of a red, a green and a blue frame after each of `draws` draws of `mode`."""
    torch.manual_seed(0)
    frames = [Image.new('RGB', (8, 8), color) for color in ((220, 40, 40), (40, 170, 60), (40, 80, 225))]
    distort = PhotometricDistort(mode)
    return {tuple(int(np.asarray(frame).reshape(-1, 3).mean(0).argmax()) for frame in distort(frames, {})[0])
            for _ in range(draws)}


def test_photometric_modes():
    assert get_args_parser().parse_args([]).photometric == 'ssd', 'the original augmentation stays the default'
    assert len(dominant_channels('ssd')) > 1, 'the original permutes the channels of some frames'
    assert dominant_channels('brightness_contrast') == {(0, 1, 2)}, 'a red shape stays red'
    frames, target = make_clip()
    torch.manual_seed(0)
    changed = make_video_transforms('train', photometric='brightness_contrast').transforms[1](frames, target)[0]
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(frames, changed))
    without = make_video_transforms('train', photometric='none').transforms
    assert not any(isinstance(transform, PhotometricDistort) for transform in without)
    with pytest.raises(ValueError, match='unknown photometric mode'):
        PhotometricDistort('hue')

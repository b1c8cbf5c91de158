"""Which frames of a video make a clip: training clips around an anchor, evaluation windows.

Frame indices are 0-based positions in the video's sorted frame list; every function returns them sorted.
"""
import random
from typing import List


def sample_train_frames(anchor: int, num_video_frames: int, num_frames: int, max_skip: int,
                        rng: random.Random = random) -> List[int]:
    """`num_frames` indices: the anchor, one frame 1..max_skip before and one 1..max_skip after it (clamped to
    the video), then random frames outside the span of those three (from the whole video if too few lie
    outside; every frame once plus random repeats if the video is shorter than the clip)."""
    last = num_video_frames - 1
    near = [anchor, max(0, anchor - rng.randint(1, max_skip)), min(last, anchor + rng.randint(1, max_skip))]
    frames = near[:num_frames]
    num_global = num_frames - len(frames)
    if num_global > 0:
        low, high = min(frames), max(frames)
        outside = [i for i in range(num_video_frames) if i < low or i > high]
        if len(outside) >= num_global:
            frames += rng.sample(outside, num_global)
        elif num_video_frames >= num_global:
            frames += rng.sample(range(num_video_frames), num_global)
        else:
            frames += list(range(num_video_frames)) + rng.choices(range(num_video_frames),
                                                                  k=num_global - num_video_frames)
    return sorted(frames)


def centred_window(center: int, first: int, last: int, num_frames: int) -> List[int]:
    """The `num_frames` frames `center - num_frames // 2 ... center + (num_frames + 1) // 2 - 1`, each clamped
    to [first, last] (edge frames repeat)."""
    return [min(max(i, first), last) for i in range(center - num_frames // 2, center + (num_frames + 1) // 2)]


def consecutive_window(start: int, num_video_frames: int, num_frames: int) -> List[int]:
    """`num_frames` consecutive frames from `start`, moved back to end at the last frame when they would run
    past it (a video shorter than the clip repeats its last frame)."""
    first = max(0, min(start, num_video_frames - num_frames))
    return [min(first + k, num_video_frames - 1) for k in range(num_frames)]


def expression_clip(start: int, num_video_frames: int, num_frames: int, max_skip: int, train: bool) -> List[int]:
    """The frames of an item of the Ref-YouTube-VOS-style benchmarks, which start one item every `num_frames`
    frames: a training clip drawn around `start`, or the evaluation window of consecutive frames from it."""
    if train:
        return sample_train_frames(start, num_video_frames, num_frames, max_skip)
    return consecutive_window(start, num_video_frames, num_frames)

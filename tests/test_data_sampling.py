"""Which frames make a clip."""
import random

import pytest

from datasets.sampling import centred_window, consecutive_window, sample_train_frames


@pytest.mark.parametrize('num_video_frames', [1, 2, 3, 5, 8, 36])
@pytest.mark.parametrize('num_frames', [1, 2, 3, 5, 6, 8])
def test_train_frames_rules(num_video_frames, num_frames):
    rng = random.Random(0)
    for anchor in range(num_video_frames):
        for _ in range(20):
            frames = sample_train_frames(anchor, num_video_frames, num_frames, max_skip=3, rng=rng)
            assert len(frames) == num_frames and frames == sorted(frames)
            assert anchor in frames and all(0 <= i < num_video_frames for i in frames)
            if num_frames >= 3:
                before = [i for i in frames if anchor - 3 <= i < anchor]
                after = [i for i in frames if anchor < i <= anchor + 3]
                assert before or anchor == 0
                assert after or anchor == num_video_frames - 1
            if num_video_frames == 36 and num_frames >= 3:   # long video: only clamped neighbours repeat
                assert len(set(frames)) == num_frames - (anchor == 0) - (anchor == num_video_frames - 1)
            if num_video_frames < num_frames - 3:            # fewer frames than the global draws: all of them
                assert set(frames) == set(range(num_video_frames))


def test_train_frames_global_frames_lie_outside_the_local_span():
    rng = random.Random(1)
    for _ in range(200):
        frames = sample_train_frames(20, 40, 6, max_skip=3, rng=rng)
        before, after = max(i for i in frames if i < 20), min(i for i in frames if i > 20)
        assert 17 <= before and after <= 23 and len(set(frames)) == 6
        assert all(i < before or i > after for i in frames if i not in (before, 20, after))


def test_train_frames_neighbour_distance_follows_max_skip():
    rng = random.Random(2)
    distances = set()
    for _ in range(300):
        frames = sample_train_frames(10, 40, 3, max_skip=5, rng=rng)
        distances.update({10 - frames[0], frames[2] - 10})
    assert distances == {1, 2, 3, 4, 5}


def test_centred_window():
    assert centred_window(10, 0, 20, 6) == [7, 8, 9, 10, 11, 12]
    assert centred_window(10, 0, 20, 5) == [8, 9, 10, 11, 12]
    assert centred_window(0, 0, 20, 6) == [0, 0, 0, 0, 1, 2]
    assert centred_window(20, 1, 20, 6) == [17, 18, 19, 20, 20, 20]
    assert centred_window(1, 1, 1, 3) == [1, 1, 1]


def test_consecutive_window():
    assert consecutive_window(0, 10, 4) == [0, 1, 2, 3]
    assert consecutive_window(8, 10, 4) == [6, 7, 8, 9]
    assert consecutive_window(0, 3, 5) == [0, 1, 2, 2, 2]

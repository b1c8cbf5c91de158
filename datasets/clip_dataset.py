"""The base of every clip dataset: load an item, transform it, re-draw training clips with no valid frame."""
import random
from typing import Callable, Dict, List, Tuple

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset


class ClipDataset(Dataset):
    """Subclasses implement `__len__` and `load(idx) -> (frames, target)` (PIL frames, `targets.clip_target`).

    Items are `(frames [T, 3, H, W], target)` after `transforms`. In training, an item whose object is in no
    frame after augmentation is replaced by another one drawn at random, as in the original implementation.
    """
    max_redraws = 100

    def __init__(self, transforms: Callable, train: bool):
        self.transforms = transforms
        self.train = train

    def load(self, idx: int) -> Tuple[List[Image.Image], Dict]:
        raise NotImplementedError

    def __getitem__(self, idx: int) -> Tuple[Tensor, Dict]:
        for _ in range(self.max_redraws):
            frames, target = self.transforms(*self.load(idx))
            if not self.train or target['valid'].any():
                return frames, target
            idx = random.randrange(len(self))
        raise RuntimeError(f'{type(self).__name__}: {self.max_redraws} clips in a row had no valid frame; '
                           'are the masks empty?')

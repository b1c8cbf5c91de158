"""The mask folders that the referring inference scripts write (Ref-YouTube-VOS, MeViS):
`<folder>/<video>/<exp_id>/<frame>.png` (0/255), one folder per expression written atomically, so that an
interrupted run resumes at the first expression not written; their overlays (each written atomically and
checked on resume); the zip an evaluation server takes."""
import zipfile
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image

from util.files import atomic_folder, atomic_write
from util.visualize import overlay


class Expression(NamedTuple):
    """A sentence to segment over a whole video; `frames`: the names (file stems) of its frames, in order."""
    video: str
    exp_id: str
    text: str
    frames: List[str]


def is_written(folder: Path, expression: Expression, overlays: Optional[Path] = None) -> bool:
    """Whether the masks of every frame of `expression` are in `folder` and, with `overlays` (the folder of
    `save_overlays`), its overlays too, each a readable image."""
    masks = folder / expression.video / expression.exp_id
    if not (masks.is_dir() and all((masks / f'{frame}.png').exists() for frame in expression.frames)):
        return False
    return overlays is None or all(is_readable_image(overlays / expression.video / expression.exp_id / f'{frame}.png')
                                   for frame in expression.frames)


def is_readable_image(path: Path) -> bool:
    """Whether `path` is an image file that reads back whole."""
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def write_masks(folder: Path, expression: Expression, masks: Sequence[np.ndarray]) -> None:
    """Masks (bool, `[H, W]` per frame) as 0/255 PNGs in `<folder>/<video>/<exp_id>/`, written atomically."""
    with atomic_folder(folder / expression.video / expression.exp_id) as partial:
        for frame, mask in zip(expression.frames, masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(partial / f'{frame}.png')


def save_overlays(folder: Path, expression: Expression, frames: List[Image.Image], result: Dict) -> None:
    """`<folder>/<video>/<exp_id>/<frame>.png`, each written atomically: every frame with its mask, box and
    reference point (`result` of `inference.chosen_masks`)."""
    for frame, name, mask, box, point in zip(frames, expression.frames, result['masks'], result['boxes'],
                                             result['points']):
        with atomic_write(folder / expression.video / expression.exp_id / f'{name}.png', 'wb') as file:
            overlay(frame, mask, box, point).save(file, format='PNG')


def write_submission(path: Path, folder: Path, expressions: Sequence[Expression], root: str = '') -> Path:
    """A zip at `path` (written atomically) of the masks of `expressions` in `folder`, stored as
    `<root><video>/<exp_id>/<frame>.png` (`root`: '' or a folder such as 'Annotations/')."""
    with atomic_write(path, 'wb') as file, zipfile.ZipFile(file, 'w', compression=zipfile.ZIP_STORED) as archive:
        for e in expressions:
            for frame in e.frames:
                archive.write(folder / e.video / e.exp_id / f'{frame}.png', f'{root}{e.video}/{e.exp_id}/{frame}.png')
    return path

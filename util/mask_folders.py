"""The mask folders that the referring inference scripts write (Ref-YouTube-VOS, MeViS):
`<folder>/<video>/<exp_id>/<frame>.png` (0/255), one folder per expression written atomically, so that an
interrupted run resumes at the first expression not written; their overlays; the zip an evaluation server
takes."""
import zipfile
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence

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


def is_written(folder: Path, expression: Expression) -> bool:
    """Whether the masks of every frame of `expression` are in `folder`."""
    masks = folder / expression.video / expression.exp_id
    return masks.is_dir() and all((masks / f'{frame}.png').exists() for frame in expression.frames)


def write_masks(folder: Path, expression: Expression, masks: np.ndarray) -> None:
    """Masks `[T, H, W]` (bool) as 0/255 PNGs in `<folder>/<video>/<exp_id>/`, written atomically."""
    with atomic_folder(folder / expression.video / expression.exp_id) as partial:
        for frame, mask in zip(expression.frames, masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(partial / f'{frame}.png')


def save_overlays(folder: Path, frames: List[Image.Image], names: List[str], result: Dict) -> None:
    """`<folder>/<name>.png`: every frame with its mask, box and reference point (`result` of
    `inference.chosen_masks`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for frame, name, mask, box, point in zip(frames, names, result['masks'], result['boxes'], result['points']):
        overlay(frame, mask, box, point).save(folder / f'{name}.png')


def write_submission(path: Path, folder: Path, expressions: Sequence[Expression], root: str = '') -> Path:
    """A zip at `path` (written atomically) of the masks of `expressions` in `folder`, stored as
    `<root><video>/<exp_id>/<frame>.png` (`root`: '' or a folder such as 'Annotations/')."""
    with atomic_write(path, 'wb') as file, zipfile.ZipFile(file, 'w', compression=zipfile.ZIP_STORED) as archive:
        for e in expressions:
            for frame in e.frames:
                archive.write(folder / e.video / e.exp_id / f'{frame}.png', f'{root}{e.video}/{e.exp_id}/{frame}.png')
    return path

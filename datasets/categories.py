"""Category ids: those of the 65 Ref-YouTube-VOS categories, and the Ref-DAVIS17 ones (read from the converted data)."""
from pathlib import Path
from typing import Dict

from util.benchmarks import YTVOS_CATEGORIES
from util.files import read_json

YTVOS_CATEGORY_IDS: Dict[str, int] = {name: i for i, name in enumerate(YTVOS_CATEGORIES)}

DAVIS_CONVERT_HINT = 'convert Ref-DAVIS17 first: python tools/convert_davis_to_ytvos.py --davis_path ...'


def davis_category_ids(davis_path: Path) -> Dict[str, int]:
    """Ids of the categories of the converted Ref-DAVIS17 (train/ and valid/ meta.json), sorted by name."""
    names = set()
    for split in ('train', 'valid'):
        meta = read_json(Path(davis_path) / split / 'meta.json', f'converted Ref-DAVIS17 {split} meta.json',
                         DAVIS_CONVERT_HINT)
        names.update(obj['category'] for video in meta['videos'].values() for obj in video['objects'].values())
    return {name: i for i, name in enumerate(sorted(names))}

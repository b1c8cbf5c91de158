"""COCO-format ground truth of single annotated frames (A2D-Sentences, JHMDB-Sentences evaluation)."""
from pathlib import Path
from typing import Iterable, Tuple

import numpy as np
import pycocotools.mask as mask_util

from util.files import write_json


def write_coco_ground_truth(samples: Iterable[Tuple[str, np.ndarray]], path: Path) -> None:
    """One image (id = the sample's image_id string) and one annotation (RLE mask `[H, W]`, bbox, area,
    category 1, iscrowd 0) per `(image_id, mask)`; repeated image ids are kept once."""
    images, annotations = [], []
    seen = set()
    for image_id, mask in samples:
        if image_id in seen:
            continue
        seen.add(image_id)
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        images.append({'id': image_id, 'height': int(mask.shape[0]), 'width': int(mask.shape[1])})
        annotations.append({'id': len(annotations) + 1, 'image_id': image_id, 'category_id': 1,
                            'segmentation': {'size': rle['size'], 'counts': rle['counts'].decode('ascii')},
                            'area': float(mask_util.area(rle)), 'bbox': mask_util.toBbox(rle).tolist(),
                            'iscrowd': 0})
    write_json({'categories': [{'id': 1, 'name': 'dummy_class'}], 'images': images, 'annotations': annotations},
               path)

"""Facts about the benchmarks that both the models and the data loaders need: the `--dataset_file` names,
the classes of each benchmark, the file names of the ground truths the loaders derive, MeViS's splits and
files."""
from typing import Dict

REFEXP_DATASETS = ('refcoco', 'refcoco+', 'refcocog')
# The `--dataset_file` choices: 'all' is RefCOCO/+/g together, 'joint' those and Ref-YouTube-VOS.
DATASETS = ('ytvos', 'davis', 'a2d', 'jhmdb', 'mevis', *REFEXP_DATASETS, 'all', 'joint')

# The 65 Ref-YouTube-VOS categories; a category's label is its index.
YTVOS_CATEGORIES = (
    'airplane', 'ape', 'bear', 'bike', 'bird', 'boat', 'bucket', 'bus', 'camel', 'cat', 'cow', 'crocodile',
    'deer', 'dog', 'dolphin', 'duck', 'eagle', 'earless_seal', 'elephant', 'fish', 'fox', 'frisbee', 'frog',
    'giant_panda', 'giraffe', 'hand', 'hat', 'hedgehog', 'horse', 'knife', 'leopard', 'lion', 'lizard',
    'monkey', 'motorbike', 'mouse', 'others', 'owl', 'paddle', 'parachute', 'parrot', 'penguin', 'person',
    'plant', 'rabbit', 'raccoon', 'sedan', 'shark', 'sheep', 'sign', 'skateboard', 'snail', 'snake',
    'snowboard', 'squirrel', 'surfboard', 'tennis_racket', 'tiger', 'toilet', 'train', 'truck', 'turtle',
    'umbrella', 'whale', 'zebra',
)

# Benchmarks trained and scored with the one class "referred", whatever `--binary` says.
CLASS_AGNOSTIC_DATASETS = ('a2d', 'jhmdb', 'mevis')
NUM_CLASSES: Dict[str, int] = {'ytvos': len(YTVOS_CATEGORIES), 'davis': 78}
# The classes of every other `--dataset_file` (RefCOCO/+/g and their combinations): COCO's category ids.
NUM_COCO_CLASSES = 91

# The COCO-format ground truth that `--eval` scores against, written by the loader into the benchmark's root.
COCO_GROUND_TRUTH_FILES: Dict[str, str] = {
    'a2d': 'a2d_sentences_test_annotations_in_coco_format.json',
    'jhmdb': 'jhmdb_sentences_gt_annotations_in_coco_format.json',
}

# MeViS (<mevis_path>/<split>/, splits train, valid_u, valid): those whose masks are public (mask_dict.json),
# the file names in every split folder, and the split the server scores with its number of videos.
MEVIS_SPLITS_WITH_MASKS = ('train', 'valid_u')
MEVIS_EXPRESSIONS_FILE = 'meta_expressions.json'
MEVIS_MASKS_FILE = 'mask_dict.json'
MEVIS_SERVER_SPLIT = 'valid'
MEVIS_SERVER_VIDEOS = 140


def num_classes(dataset_file: str, binary: bool) -> int:
    """Outputs of the class head: 1 with `--binary` or for A2D/JHMDB-Sentences and MeViS; else 65 (Ref-YouTube-VOS),
    78 (Ref-DAVIS17), 91 (COCO: RefCOCO/+/g, 'all', 'joint')."""
    if binary or dataset_file in CLASS_AGNOSTIC_DATASETS:
        return 1
    return NUM_CLASSES.get(dataset_file, NUM_COCO_CLASSES)

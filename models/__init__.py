"""BIFIT models. Where to look:

- `bifit.py`: the whole network and its forward pass;
- `vision_language.py`: the bidirectional vision-language interaction;
- `inter_frame.py`: the inter-frame interaction between the queries of all frames;
- `deformable_transformer.py`, `pixel_decoder.py`, `dynamic_mask_head.py`, `backbone.py`,
  `text_encoder.py`, `position_encoding.py`: the parts;
- `matcher.py`, `criterion.py`: the training losses; `postprocessors.py`: A2D/JHMDB predictions;
- `ops/`: multi-scale deformable attention (PyTorch and CUDA).
"""
from typing import Dict, Tuple

from torch import nn

from util.benchmarks import num_classes
from .bifit import BIFIT, build_bifit, leaves_parameters_unused
from .criterion import SetCriterion, build_criterion
from .matcher import build_matcher
from .postprocessors import build_postprocessors


def build_model(args) -> Tuple[BIFIT, SetCriterion, Dict[str, nn.Module]]:
    """(model, criterion, postprocessors) for the options of `opts.py` (the segmentation head is always on,
    whatever `--masks` says); `args` is only read."""
    classes = num_classes(args.dataset_file, args.binary)
    model = build_bifit(args)
    criterion = build_criterion(args, classes, build_matcher(args, classes))
    return model, criterion, build_postprocessors(args)

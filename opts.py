"""Command-line options shared by every entry script (training, evaluation, inference).

The names and defaults are those of the original BIFIT release, so its command lines keep
working; options added by this implementation are marked "(new)" in their help text.
"""
import argparse
import shlex
import sys
from typing import List, Optional, Set

import torch

from datasets.transforms_video import PHOTOMETRIC_MODES
from models.backbone import BACKBONES
from util.benchmarks import DATASETS
from util.cli import DEBUG_FLAG, DEBUG_HELP, ArgumentParser, UserError
from util.video_io import EVAL_SHORT_SIDE


def default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text} is not a positive integer')
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text} is negative')
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'{text} is not a finite number >= 0')
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f'{text} is not in [0, 1]')
    return value


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser('BIFIT training and inference', add_help=False)
    parser.add_argument('--config', default=None, type=str,
                        help='(new) a recipe file from configs/ (one "--flag value" per line); '
                             'flags given on the command line override it')

    group = parser.add_argument_group('optimisation')
    group.add_argument('--lr', default=5e-5, type=non_negative_float, help='learning rate of the other parameters')
    group.add_argument('--lr_backbone', default=1e-5, type=non_negative_float,
                       help='learning rate of the backbone; 0 freezes it')
    group.add_argument('--lr_backbone_names', default=['backbone.0'], type=str, nargs='+',
                       help='parameters whose names contain one of these take --lr_backbone')
    group.add_argument('--lr_text_encoder', default=1e-5, type=non_negative_float,
                       help='learning rate of RoBERTa (unused with --freeze_text_encoder)')
    group.add_argument('--lr_text_encoder_names', default=['text_encoder'], type=str, nargs='+',
                       help='parameters whose names contain one of these take --lr_text_encoder')
    group.add_argument('--lr_text_fusion', default=5e-5, type=non_negative_float,
                       help='learning rate of the word-to-vision attention (text_fusion_module)')
    group.add_argument('--lr_text_fusion_names', default=['text_fusion_module'], type=str, nargs='+',
                       help='parameters whose names contain one of these take --lr_text_fusion')
    group.add_argument('--lr_linear_proj_names', default=['reference_points', 'sampling_offsets'],
                       type=str, nargs='+',
                       help='parameters whose names contain one of these take --lr times --lr_linear_proj_mult')
    group.add_argument('--lr_linear_proj_mult', default=1.0, type=non_negative_float,
                       help='learning rate of --lr_linear_proj_names as a multiple of --lr')
    group.add_argument('--batch_size', default=1, type=positive_int, help='clips per process')
    group.add_argument('--grad_accum_steps', default=1, type=positive_int,
                       help='(new) batches per optimisation step: their gradients are accumulated, so that N '
                            'processes with K steps train with the effective batch (and the loss normalisation) '
                            'of N x K processes, e.g. 2 GPUs with 4 for the recipes of 8 GPUs; the last step of an '
                            'epoch takes the batches left over')
    group.add_argument('--weight_decay', default=5e-4, type=non_negative_float, help='AdamW weight decay')
    group.add_argument('--epochs', default=10, type=positive_int, help='epochs to train (counting from 0)')
    group.add_argument('--lr_drop', default=[6, 8], type=non_negative_int, nargs='+',
                       help='epochs after which the learning rate is divided by 10')
    group.add_argument('--clip_max_norm', default=0.1, type=non_negative_float,
                       help='gradient clipping max norm (0: no clipping)')
    group.add_argument('--pretrained_weights', type=str, default=None,
                       help='a pretrained BIFIT checkpoint to finetune from (e.g. RefCOCO pretraining)')
    group.add_argument('--skip_nonfinite', action='store_true',
                       help='(new) skip optimisation steps whose loss is not finite instead of stopping')
    group.add_argument('--amp', action='store_true',
                       help='(new) mixed precision (bfloat16 autocast) on CUDA; losses stay float32')

    group = parser.add_argument_group('model')
    group.add_argument('--with_box_refine', default=False, action='store_true',
                       help='iterative box refinement in the decoder')
    group.add_argument('--two_stage', default=False, action='store_true',
                       help='two-stage Deformable DETR; not supported by BIFIT (must stay off)')
    group.add_argument('--backbone', default='resnet50', type=str, choices=BACKBONES, help='visual backbone')
    group.add_argument('--backbone_pretrained', default=None, type=str,
                       help="ImageNet/Kinetics weights of the backbone: a local file, 'none' to skip them, or "
                            "unset (None) for torchvision's ImageNet weights of the ResNets")
    group.add_argument('--use_checkpoint', action='store_true',
                       help='activation checkpointing in the (video) Swin stages')
    group.add_argument('--activation_checkpointing', action='store_true',
                       help='recompute the activations of the ResNet stages, the deformable encoder layers and the '
                            'pixel decoder stages in the backward pass instead of storing them: less memory '
                            'for long clips, about one more forward pass of those parts in time; same losses '
                            'and gradients')
    group.add_argument('--dilation', action='store_true',
                       help="replace the last ResNet stage's stride by dilation (DC5)")
    group.add_argument('--position_embedding', default='sine', type=str, choices=('sine',),
                       help='positional embedding of the visual features')
    group.add_argument('--num_feature_levels', default=4, type=int, choices=(4,),
                       help='visual levels of the transformer (strides 8, 16, 32, 64)')
    group.add_argument('--enc_layers', default=4, type=positive_int, help='deformable encoder layers')
    group.add_argument('--dec_layers', default=4, type=positive_int, help='deformable decoder layers')
    group.add_argument('--query_enc_layers', default=1, type=int,
                       help='layers of the inter-frame interaction module after each decoder layer')
    group.add_argument('--dim_feedforward', default=2048, type=positive_int,
                       help='hidden width of the transformer feed-forward layers')
    group.add_argument('--hidden_dim', default=256, type=positive_int, help='model width C')
    group.add_argument('--dropout', default=0.1, type=fraction, help='dropout of the transformer layers')
    group.add_argument('--nheads', default=8, type=positive_int, help='attention heads')
    group.add_argument('--num_frames', default=6, type=positive_int, help='frames per training clip')
    group.add_argument('--num_queries', default=5, type=positive_int, help='queries per frame')
    group.add_argument('--dec_n_points', default=4, type=positive_int,
                       help='sampling points per head and level of the decoder attention')
    group.add_argument('--enc_n_points', default=4, type=positive_int,
                       help='sampling points per head and level of the encoder attention')
    group.add_argument('--pre_norm', action='store_true',
                       help='pre-norm transformer layers; not supported (the released models are post-norm)')
    group.add_argument('--text_encoder', default='roberta-base', type=str,
                       help='(new) Hugging Face name or local directory of the RoBERTa text encoder')
    group.add_argument('--freeze_text_encoder', action='store_true', help='do not train RoBERTa')
    group.add_argument('--masks', action='store_true',
                       help='accepted for the original command lines: the segmentation head is always on')
    group.add_argument('--mask_dim', default=256, type=positive_int, help='channels of the mask features')
    group.add_argument('--controller_layers', default=3, type=positive_int,
                       help='layers of the dynamic mask head')
    group.add_argument('--dynamic_mask_channels', default=8, type=positive_int,
                       help='channels of the dynamic mask head layers')
    group.add_argument('--no_rel_coord', dest='rel_coord', action='store_false',
                       help='no relative coordinates in the dynamic mask head')

    group = parser.add_argument_group('loss')
    group.add_argument('--no_aux_loss', dest='aux_loss', action='store_false',
                       help='no losses on the intermediate decoder layers')
    for term, default in (('class', 2), ('bbox', 5), ('giou', 2), ('mask', 2), ('dice', 5)):
        group.add_argument(f'--set_cost_{term}', default=default, type=non_negative_float,
                           help=f'weight of the {term} term in the matching cost')
    for term, default in (('mask', 2), ('dice', 5), ('cls', 2), ('bbox', 5), ('giou', 2)):
        group.add_argument(f'--{term}_loss_coef', default=default, type=non_negative_float,
                           help=f'weight of the {term} loss')
    group.add_argument('--eos_coef', default=0.1, type=float,
                       help='accepted for compatibility and unused, as in the original (its focal classification '
                            'loss has no no-object weight)')
    group.add_argument('--focal_alpha', default=0.25, type=fraction, help='alpha of the focal classification loss')

    group = parser.add_argument_group('data')
    group.add_argument('--dataset_file', default='ytvos', choices=DATASETS, help='benchmark to train or evaluate')
    roots = (('coco', 'coco', 'RefCOCO/+/g (COCO images, refcoco* annotations)'),
             ('ytvos', 'ref-youtube-vos', 'Ref-YouTube-VOS'), ('davis', 'ref-davis', 'Ref-DAVIS17'),
             ('a2d', 'a2d_sentences', 'A2D-Sentences'), ('jhmdb', 'jhmdb_sentences', 'JHMDB-Sentences'))
    for name, folder, benchmark in roots:
        group.add_argument(f'--{name}_path', type=str, default=f'data/{folder}', help=f'{benchmark} root, see data.md')
    group.add_argument('--mevis_path', type=str, default='data/mevis',
                       help='(new) MeViS: the folder holding train/, valid_u/ and valid/')
    group.add_argument('--max_skip', default=3, type=positive_int, help='largest gap to the anchor of the near frames')
    group.add_argument('--max_size', default=640, type=positive_int, help='largest side of a resized frame')
    group.add_argument('--photometric', default='ssd', choices=PHOTOMETRIC_MODES,
                       help="(new) photometric augmentation of the training frames: 'ssd' (the original: "
                            "brightness, contrast, saturation, hue and channel-order jitter, which changes the "
                            "colours the captions name), 'brightness_contrast' (colours kept) or 'none'")
    group.add_argument('--binary', action='store_true', help='one "referred" class instead of categories')
    group.add_argument('--remove_difficult', action='store_true',
                       help='accepted for compatibility and unused, as in the original')

    group = parser.add_argument_group('run')
    group.add_argument('--output_dir', default='output', help='where checkpoints, logs and results go')
    group.add_argument('--device', default=default_device(),
                       help='cuda or cpu (the default is cuda when a GPU is visible)')
    group.add_argument(DEBUG_FLAG, action='store_true', help=DEBUG_HELP)
    group.add_argument('--seed', default=42, type=int, help='random seed (each process adds its rank)')
    group.add_argument('--resume', default='',
                       help="a checkpoint to evaluate, or a training checkpoint (ours or the original's) to "
                            'continue: model, optimizer, scheduler and epoch; the learning rates are those of '
                            'this command line, decayed for the milestones the checkpoint has passed')
    group.add_argument('--start_epoch', default=0, type=non_negative_int, metavar='N',
                       help='first epoch to train (a resumed checkpoint sets it)')
    group.add_argument('--eval', action='store_true',
                       help='evaluate only: A2D-Sentences / JHMDB-Sentences metrics, or (new) the mask IoU of '
                            'held-out clips with masks in the Ref-YouTube-VOS layout (--dataset_file ytvos or davis: '
                            'Ref-Shapes, converted Ref-DAVIS17) or of MeViS valid_u (--dataset_file mevis)')
    group.add_argument('--num_workers', default=4, type=non_negative_int, help='data loading processes')
    group.add_argument('--threshold', default=0.5, type=fraction,
                       help='mask probability threshold of the Ref-YouTube-VOS masks, the demo and the held-out '
                            'mask IoU; (new) also of the A2D/JHMDB evaluation masks, which the original always '
                            'thresholds at 0.5: the default reproduces its numbers, another value changes the '
                            "A2D/JHMDB masks and so their mAP, precision and IoU (Ref-DAVIS17's 0.5 is fixed)")
    group.add_argument('--short_side', default=EVAL_SHORT_SIDE, type=positive_int,
                       help='(new) inference scripts: frames resized to this short side (the protocol: 360)')
    group.add_argument('--ngpu', default=2, type=positive_int,
                       help='worker processes for Ref-YTVOS / Ref-DAVIS / MeViS inference (one per GPU)')
    group.add_argument('--split', default='valid', type=str, choices=['valid', 'test', 'valid_u'],
                       help='the split the inference scripts segment: valid or test (Ref-YouTube-VOS), (new) '
                            'valid_u or valid (MeViS)')
    group.add_argument('--visualize', action='store_true', help='also save overlays of the predictions')
    group.add_argument('--world_size', default=1, type=positive_int, help='number of distributed processes')
    group.add_argument('--dist_url', default='env://', help='URL used to set up distributed training')
    group.add_argument('--cache_mode', default=False, action='store_true',
                       help='keep decoded images in memory')
    return parser


def read_config(path: str) -> List[str]:
    """The flags of a recipe file: shell-like words, `#` starts a comment."""
    try:
        with open(path) as f:
            return shlex.split(f.read(), comments=True)
    except OSError as error:
        raise UserError(f'--config {path}: cannot read the recipe ({error.strerror})') from error


def with_recipe(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> List[str]:
    """`argv` (default: the command line) with the flags of its `--config FILE` recipe first, so that the
    command line overrides them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known, _ = parser.parse_known_args(argv)
    if not known.config:
        return argv
    recipe = read_config(known.config)
    known_flags = parser._option_string_actions
    unknown = [word for word in recipe if word.startswith('-') and word.split('=')[0] not in known_flags]
    if unknown:
        raise UserError(f'--config {known.config}: unknown flag {unknown[0]} (see --help)')
    return recipe + argv


def parse_args(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse `argv` (default: the command line); with `--config FILE`, the recipe's flags come
    first so that the command line overrides them."""
    return parser.parse_args(with_recipe(parser, argv))


def given_options(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> Set[str]:
    """The destinations of the options that `argv` (default: the command line) or its recipe set."""
    unset = object()
    namespace = argparse.Namespace(**{action.dest: unset for action in parser._actions})
    parser.parse_known_args(with_recipe(parser, argv), namespace)
    return {dest for dest, value in vars(namespace).items() if value is not unset}


def checkpoint_options(parser: argparse.ArgumentParser) -> List[str]:
    """The options a training checkpoint records in its `args` and inference can take from it: those of the
    'model' group, --binary and --dataset_file (the classes), and --short_side."""
    model = next(group for group in parser._action_groups if group.title == 'model')
    return [action.dest for action in model._group_actions] + ['binary', 'dataset_file', 'short_side']


TRAINING_GROUPS = ('optimisation', 'loss')
TRAINING_OPTIONS = ('num_frames', 'coco_path', 'a2d_path', 'jhmdb_path', 'max_skip', 'max_size', 'photometric',
                    'remove_difficult', 'start_epoch', 'eval', 'num_workers', 'world_size', 'dist_url', 'cache_mode')


def inference_parser(prog: str) -> ArgumentParser:
    """The options of a script that runs a trained model: every script's, with those of training
    (the groups of TRAINING_GROUPS and TRAINING_OPTIONS) accepted but left out of --help."""
    parser = ArgumentParser(prog, parents=[get_args_parser()], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            epilog='The training options (learning rates, losses) are accepted and ignored; '
                                   'see main.py --help.')
    for group in parser._action_groups:
        for action in group._group_actions:
            if group.title in TRAINING_GROUPS or action.dest in TRAINING_OPTIONS:
                action.help = argparse.SUPPRESS
    return parser


def demo_parser(prog: str) -> ArgumentParser:
    """The options of the demos (demo.py, app.py): those of `inference_parser`, --clip_len, and the released
    model's flags (--with_box_refine --binary --freeze_text_encoder) as defaults."""
    parser = inference_parser(prog)
    parser.add_argument('--clip_len', default=36, type=positive_int, help='frames per forward pass (bounds memory)')
    parser.set_defaults(with_box_refine=True, binary=True, freeze_text_encoder=True, ngpu=1)
    return parser

"""The visual backbone: a torchvision ResNet with frozen batch norm, and its position embedding.

`Joiner(backbone, position_embedding)` is the `backbone` attribute of the model (`backbone.0` the
body wrapper, `backbone.1` the position embedding), as in the released checkpoints.
"""
import functools
import logging
from typing import List, Tuple

import torch
import torch.nn.functional as F
import torchvision
from einops import rearrange
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from util.checkpoint import read_state_dict
from util.misc import NestedTensor, downsample_mask
from .layers import checkpointed, with_standard_gradient_strides
from .position_encoding import build_position_encoding
from .swin import IMAGE_SWINS, VIDEO_SWINS, build_swin_body

logger = logging.getLogger(__name__)

RESNETS = ('resnet18', 'resnet34', 'resnet50', 'resnet101')
BACKBONES = (*RESNETS, *IMAGE_SWINS, *VIDEO_SWINS)


def _stage_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage: those of the last convolution of its last block."""
    convs = [m for m in stage[-1].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def load_resnet_weights(resnet: nn.Module, name: str, pretrained: str) -> None:
    """Load ImageNet weights into `resnet`: torchvision's (`pretrained` None) or a local file."""
    if pretrained is None:
        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        try:
            state_dict = weights.get_state_dict(progress=True)
        except Exception as error:
            raise RuntimeError(
                f"could not download torchvision's ImageNet weights for {name} ({error}). Offline, pass "
                f"--backbone_pretrained PATH (a local {name} state dict) or --backbone_pretrained none "
                f"(random backbone), or --resume / --pretrained_weights with a full BIFIT checkpoint.") from error
    else:
        state_dict = read_state_dict(pretrained)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith('fc.')}
    missing, unexpected = resnet.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.startswith('fc.')]
    if missing or unexpected:
        raise RuntimeError(f'{pretrained or name}: not a {name} state dict '
                           f'(missing keys {missing[:5]}..., unexpected keys {unexpected[:5]}...)')
    logger.info('backbone %s: ImageNet weights from %s', name, pretrained or 'torchvision')


def conv_frozen_bn(x: Tensor, conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> Tensor:
    """`bn(conv(x))` as one convolution: the frozen batch norm's scale folded into the weights
    (in channels-last memory, like the feature maps), its shift as the bias."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    shift = bn.bias - bn.running_mean * scale
    weight = with_standard_gradient_strides(conv.weight) * scale[:, None, None, None]
    weight = weight.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)


def residual_block(block: nn.Module, x: Tensor) -> Tensor:
    """A torchvision `Bottleneck` or `BasicBlock` with its frozen batch norms folded into the convolutions."""
    convs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if hasattr(block, 'conv3'):
        convs.append((block.conv3, block.bn3))
    out = x
    for i, (conv, bn) in enumerate(convs):
        out = conv_frozen_bn(out, conv, bn)
        if i < len(convs) - 1:
            out = F.relu(out, inplace=True)
    identity = x if block.downsample is None else conv_frozen_bn(x, block.downsample[0], block.downsample[1])
    return F.relu(out.add_(identity), inplace=True)


def residual_stage(stage: nn.Sequential, x: Tensor) -> Tensor:
    """The residual blocks of one ResNet stage (`residual_block` each)."""
    for block in stage:
        x = residual_block(block, x)
    return x


class ResNetBody(nn.Module):
    """ResNet stages 1-4 of `[N, 3, H, W]` frames, each with its padding mask (strides 4, 8, 16, 32).

    Stem and layer1 are always frozen; layer2-4 train when `train_backbone`. The feature maps are
    in channels-last memory (fast convolutions, and token sequences are views of them), with every
    frozen batch norm folded into the convolution before it.
    """

    def __init__(self, name: str, train_backbone: bool, dilation: bool, pretrained,
                 activation_checkpointing: bool = False):
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        if name not in RESNETS:
            raise ValueError(f'unknown ResNet {name!r}; choose one of {RESNETS}')
        resnet = getattr(torchvision.models, name)(
            weights=None, replace_stride_with_dilation=[False, False, dilation], norm_layer=FrozenBatchNorm2d)
        if pretrained is not False:
            load_resnet_weights(resnet, name, pretrained)
        for param_name, parameter in resnet.named_parameters():
            trainable = train_backbone and param_name.split('.')[0] in ('layer2', 'layer3', 'layer4')
            parameter.requires_grad_(trainable)
        self.strides = [4, 8, 16, 32 if not dilation else 16]
        self.num_channels = [_stage_channels(getattr(resnet, f'layer{i}')) for i in range(1, 5)]
        self.body = IntermediateLayerGetter(
            resnet, return_layers={'layer1': '0', 'layer2': '1', 'layer3': '2', 'layer4': '3'})

    def forward(self, frames: NestedTensor) -> List[NestedTensor]:
        body = self.body
        x = frames.tensors.contiguous(memory_format=torch.channels_last)
        x = body.maxpool(F.relu(conv_frozen_bn(x, body.conv1, body.bn1), inplace=True))
        outputs = []
        for stage in (body.layer1, body.layer2, body.layer3, body.layer4):
            x = checkpointed(functools.partial(residual_stage, stage), x, enabled=self.activation_checkpointing)
            outputs.append(NestedTensor(x, downsample_mask(frames.mask, x.shape[-2:])))
        return outputs


class Joiner(nn.Sequential):
    """Backbone features and their 2-D position embeddings for a batch of videos."""

    def __init__(self, backbone: nn.Module, position_embedding: nn.Module):
        super().__init__(backbone, position_embedding)
        self.strides = backbone.strides
        self.num_channels = backbone.num_channels

    def forward(self, videos: NestedTensor) -> Tuple[List[NestedTensor], List[Tensor]]:
        """videos `[B, T, 3, H, W]` (mask `[B, T, H, W]`) -> per level features `[(B T), C_l, h_l, w_l]`
        with masks `[(B T), h_l, w_l]`, and position embeddings `[(B T), hidden_dim, h_l, w_l]`.

        The body gets the frames `[(B T), 3, H, W]`, or the videos themselves if it declares
        `takes_clips = True` (Video Swin)."""
        if getattr(self[0], 'takes_clips', False):
            features = self[0](videos)
        else:
            frames = NestedTensor(rearrange(videos.tensors, 'b t c h w -> (b t) c h w'),
                                  rearrange(videos.mask, 'b t h w -> (b t) h w'))
            features = self[0](frames)
        pos = [self[1](x).to(x.tensors.dtype) for x in features]
        return features, pos


def backbone_weights_source(args):
    """What `--backbone_pretrained` asks for: False (none), None (the library default) or a path.

    Nothing is loaded when a full BIFIT checkpoint (`--resume`, `--pretrained_weights`) will supply it.
    """
    if args.resume or args.pretrained_weights:
        return False
    if args.backbone_pretrained is not None and args.backbone_pretrained.lower() == 'none':
        return False
    return args.backbone_pretrained


def build_backbone(args) -> Joiner:
    train_backbone = args.lr_backbone > 0
    pretrained = backbone_weights_source(args)
    if args.backbone in RESNETS:
        body = ResNetBody(args.backbone, train_backbone, args.dilation, pretrained, args.activation_checkpointing)
    elif args.backbone in IMAGE_SWINS or args.backbone in VIDEO_SWINS:
        body = build_swin_body(args.backbone, pretrained, train_backbone, args.use_checkpoint)
    else:
        raise ValueError(f'unknown backbone {args.backbone!r}')
    return Joiner(body, build_position_encoding(args))

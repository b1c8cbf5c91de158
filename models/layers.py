"""Small building blocks shared by the transformer parts and the heads."""
import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# Without autograd, the token-wise computations (the feed-forward blocks, the token-wise layers of the pixel
# decoder's vision-language blocks, the gather of deformable attention) run over chunks of tokens whose
# largest temporary holds at most this many elements (16 MB in float32) instead of materialising it for
# all tokens at once: less memory, and buffers small enough for the allocator to reuse rather than map anew.
CHUNK_ELEMENTS = 2 ** 22


class MLP(nn.Module):
    """`num_layers` linear layers with relu between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + hidden, hidden + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class StandardStridesGradient(torch.autograd.Function):
    """The identity, whose backward pass hands on the gradient with standard (contiguous) strides. A convolution in
    channels-last memory returns its weight's gradient with channels-last strides (for a 1x1 kernel they differ
    only on the size-1 dimensions); DistributedDataParallel's gradient buckets take such a gradient with a warning
    and a copy every step."""

    @staticmethod
    def forward(ctx, weight: Tensor) -> Tensor:
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.reshape(-1).view(grad.shape)


def with_standard_gradient_strides(weight: Tensor) -> Tensor:
    """`weight`, through `StandardStridesGradient` where it takes a gradient."""
    return StandardStridesGradient.apply(weight) if weight.requires_grad else weight


class ChannelsLastConv2d(nn.Conv2d):
    """`nn.Conv2d` for feature maps in channels-last memory, its weight's gradient with the weight's strides
    (`StandardStridesGradient`)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, with_standard_gradient_strides(self.weight), self.bias)


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    """`n` independent deep copies of `module`."""
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def checkpointed(function: Callable[..., Tensor], *inputs: Tensor, enabled: bool) -> Tensor:
    """`function(*inputs)`; when `enabled` and autograd is on, its intermediate activations are not stored
    but recomputed in the backward pass (non-reentrant `torch.utils.checkpoint`, random state replayed, so
    dropout draws the same masks): `--activation_checkpointing`."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(function, *inputs, use_reentrant=False)
    return function(*inputs)


def apply_in_chunks(function: Callable[..., Tensor], tensors: Sequence[Tensor], rows: int) -> Tensor:
    """`function(*tensors)` for a function that treats the rows (dim 0) independently, computed over
    chunks of `rows` rows and written into one output tensor."""
    total = tensors[0].shape[0]
    output = None
    for start in range(0, total, rows):
        result = function(*(tensor[start:start + rows] for tensor in tensors))
        if output is None:
            output = result.new_empty((total,) + result.shape[1:])
        output[start:start + rows] = result
    return output


def post_norm_ffn(x: Tensor, linear1: nn.Linear, linear2: nn.Linear, dropout: nn.Module,
                  residual_dropout: nn.Module, norm: nn.LayerNorm) -> Tensor:
    """`norm(x + residual_dropout(linear2(dropout(relu(linear1(x))))))` of tokens `[..., C]`.

    It runs over chunks of tokens (`CHUNK_ELEMENTS`); with autograd, each chunk stores only its input and
    recomputes its hidden layer in the backward pass, so no hidden layer of all tokens is ever held.
    """
    def ffn(tokens: Tensor) -> Tensor:
        return norm(tokens + residual_dropout(linear2(dropout(F.relu(linear1(tokens), inplace=True)))))

    rows = max(1, CHUNK_ELEMENTS // linear1.out_features)
    tokens = x.reshape(-1, x.shape[-1])
    if not torch.is_grad_enabled():
        return apply_in_chunks(ffn, [tokens], rows).view(x.shape)
    if tokens.shape[0] <= rows:
        return ffn(x)
    chunks = [checkpoint(ffn, chunk, use_reentrant=False) for chunk in tokens.split(rows)]
    return torch.cat(chunks).view(x.shape)

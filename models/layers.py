"""Small building blocks shared by the transformer parts and the heads."""
import copy

import torch.nn.functional as F
from torch import Tensor, nn


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


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    """`n` independent deep copies of `module`."""
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def post_norm_ffn(x: Tensor, linear1: nn.Linear, linear2: nn.Linear, dropout: nn.Module,
                  residual_dropout: nn.Module, norm: nn.LayerNorm) -> Tensor:
    """`norm(x + residual_dropout(linear2(dropout(relu(linear1(x))))))`."""
    return norm(x + residual_dropout(linear2(dropout(F.relu(linear1(x))))))

"""Inter-frame interaction: after every decoder layer, all queries of all frames of a clip attend
to each other, so that each frame's object queries see the same object in the other frames.

The same layers (`transformer.decoder.query_encoder_layers.K`) are applied after every decoder
layer: their weights are shared across decoder layers.
"""
from einops import rearrange
from torch import Tensor, nn

from .layers import clones, post_norm_ffn


class QueryEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer over a sequence of queries, no positional embedding.

    The modules are registered in the original's order (the linears before the norms), which fixes the
    order of the parameters in the state dict and in the optimizer."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, queries: Tensor) -> Tensor:
        """`[S, B, C]` -> `[S, B, C]`."""
        attended = self.self_attn(queries, queries, queries, need_weights=False)[0]
        queries = self.norm1(queries + self.dropout1(attended))
        return post_norm_ffn(queries, self.linear1, self.linear2, self.dropout, self.dropout2, self.norm2)


class InterFrameInteraction(nn.ModuleList):
    """`num_layers` query encoder layers over the `T*Q` queries of each clip."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int):
        super().__init__(clones(QueryEncoderLayer(d_model, nhead, dim_feedforward, dropout), num_layers))

    def forward(self, queries: Tensor, num_frames: int) -> Tensor:
        """queries `[(B T), Q, C]` -> `[(B T), Q, C]`."""
        num_queries = queries.shape[1]
        sequence = rearrange(queries, '(b t) q c -> (t q) b c', t=num_frames)
        for layer in self:
            sequence = layer(sequence)
        return rearrange(sequence, '(t q) b c -> (b t) q c', t=num_frames, q=num_queries)

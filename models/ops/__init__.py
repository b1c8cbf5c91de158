"""Multi-scale deformable attention: a PyTorch reference, a fast PyTorch gather and an optional CUDA extension."""
from .ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_gather, ms_deform_attn_pytorch

__all__ = ['MSDeformAttn', 'ms_deform_attn', 'ms_deform_attn_gather', 'ms_deform_attn_pytorch']

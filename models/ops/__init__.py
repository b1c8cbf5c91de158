"""Multi-scale deformable attention. Layers, each importing only those before it: `functions.py` (the
PyTorch implementations) -> `extension.py` (the optional CUDA extension) -> `verification.py` (its check
at first use on a device) -> `dispatch.py` (`ms_deform_attn`: which one runs) -> `modules.py` (the
`MSDeformAttn` module); `selftest.py` checks the extension on a GPU."""
from .dispatch import ms_deform_attn
from .functions import ms_deform_attn_gather, ms_deform_attn_pytorch
from .modules import MSDeformAttn

__all__ = ['MSDeformAttn', 'ms_deform_attn', 'ms_deform_attn_gather', 'ms_deform_attn_pytorch']

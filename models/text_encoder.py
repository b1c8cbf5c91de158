"""RoBERTa text encoder and tokenizer (Hugging Face `transformers`), and the resizer to the model width."""
import logging
import os
import socket
from typing import Optional, Tuple
from urllib.parse import urlparse

from huggingface_hub import constants
from torch import Tensor, nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase, RobertaModel

from util.cli import UserError

logger = logging.getLogger(__name__)

WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin', 'model.safetensors.index.json',
                'pytorch_model.bin.index.json')


class TextEncoderUnavailable(UserError):
    """`--text_encoder` names neither a local RoBERTa directory nor a model that can be downloaded."""


def _offline_hint(name: str, error: object) -> str:
    return (f"text encoder '{name}' could not be loaded ({error}).\nIt is neither a local directory with a RoBERTa model nor a "
            f"Hugging Face model that can be downloaded here. Pass --text_encoder DIR, a directory holding "
            f"config.json, the tokenizer files and (unless a BIFIT checkpoint supplies the weights) the "
            f"model weights, e.g. one written by RobertaModel.save_pretrained(DIR) (see install.md).")


def _hub_unreachable() -> Optional[str]:
    """Why the Hugging Face hub cannot be reached (its host does not resolve or refuses a connection within 5 s),
    or None when it can, when a proxy is configured, or when transformers is told to stay offline (then it says
    so itself at once): a quick answer instead of a minute of download retries on an offline machine."""
    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY')):
        return None
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as error:
        return f'{endpoint.hostname} cannot be reached: {error}'
    return None


def load_text_encoder(name: str, weights_from_checkpoint: bool) -> Tuple[RobertaModel, PreTrainedTokenizerBase]:
    """RoBERTa and its tokenizer from a Hugging Face name or a local directory.

    The pretrained weights are read unless a BIFIT checkpoint will supply them; a local directory
    without weights gives a RoBERTa built from its config (randomly initialised, with a warning
    when no checkpoint will overwrite it).
    """
    config_only = os.path.isdir(name) and not any(os.path.exists(os.path.join(name, f)) for f in WEIGHT_FILES)
    if not os.path.isdir(name) and not cached(name):
        unreachable = _hub_unreachable()
        if unreachable:
            raise TextEncoderUnavailable(_offline_hint(name, unreachable))
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        if weights_from_checkpoint or config_only:
            encoder = RobertaModel(AutoConfig.from_pretrained(name))
        else:
            encoder = RobertaModel.from_pretrained(name)
    except OSError as error:
        raise TextEncoderUnavailable(_offline_hint(name, error)) from error
    if config_only and not weights_from_checkpoint:
        logger.warning('text encoder %s has no weights: RoBERTa is randomly initialised from its config; '
                       'load a BIFIT checkpoint to give it weights', name)
    return encoder, tokenizer


def cached(name: str) -> bool:
    """Whether the Hugging Face cache holds the configuration of model `name` (an earlier download)."""
    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
    except OSError:
        return False
    return True


class FeatureResizer(nn.Module):
    """Linear projection of text features to the model width, LayerNorm (eps 1e-12) and dropout."""

    def __init__(self, input_feat_size: int, output_feat_size: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(input_feat_size, output_feat_size, bias=True)
        self.layer_norm = nn.LayerNorm(output_feat_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Tensor) -> Tensor:
        """`[..., input_feat_size]` -> `[..., output_feat_size]`."""
        return self.dropout(self.layer_norm(self.fc(features)))

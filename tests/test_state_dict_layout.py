"""The default model has exactly the checkpoint layout of the released models, so that
`ytvos_r50.pth` / `a2d_r50.pth` load with strict=True, and lists its weights in the original's order."""
import argparse
import json
import shutil

import pytest
import torch

from inference import describe_model
from models import build_model
from tests.conftest import parameters_in_key_order, parse_args, read_layout, reference
from util.checkpoint import load_checkpoint

ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, model_type='roberta',
                    architectures=['RobertaModel'])


@pytest.fixture(scope='module')
def released_model(tmp_path_factory):
    """The default R50 model with roberta-base's configuration, on the meta device (no weights)."""
    text_encoder = tmp_path_factory.mktemp('roberta-base-config')
    for name in ('tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt'):
        shutil.copy(reference('tiny_roberta', name), text_encoder / name)
    (text_encoder / 'config.json').write_text(json.dumps(ROBERTA_BASE))
    args = parse_args(['--backbone', 'resnet50', '--with_box_refine', '--binary', '--freeze_text_encoder',
                       '--text_encoder', str(text_encoder)])
    with torch.device('meta'):
        model, _, _ = build_model(args)
    return model


def test_default_model_has_the_released_layout(released_model):
    layout = read_layout()
    ours = {k: (tuple(v.shape), str(v.dtype).replace('torch.', '')) for k, v in released_model.state_dict().items()}
    assert len(layout) == 822
    assert sorted(set(layout) - set(ours)) == []
    assert sorted(set(ours) - set(layout)) == []
    assert {k: v for k, v in ours.items() if layout[k] != v} == {}
    assert sum(p.numel() for p in released_model.parameters()) == 177_906_239


def test_weights_are_registered_in_the_original_order(released_model):
    """`state_dict()` lists the keys in the original's order, so `named_parameters()` (which the optimizer
    groups follow) lists the parameters in the original's order too: its state-dict keys that are
    parameters, each shared tensor under its first name (`transformer.decoder.bbox_embed.*`, not
    `bbox_embed.*`)."""
    layout = list(read_layout())
    assert list(released_model.state_dict()) == layout
    original_parameters = [key for key, _ in parameters_in_key_order(released_model, layout)]
    assert [name for name, _ in released_model.named_parameters()] == original_parameters
    assert original_parameters[0] == 'transformer.level_embed'
    layer = 'transformer.decoder.query_encoder_layers.0.'
    assert [n[len(layer):] for n in original_parameters if n.startswith(layer)] == [
        'self_attn.in_proj_weight', 'self_attn.in_proj_bias', 'self_attn.out_proj.weight', 'self_attn.out_proj.bias',
        'linear1.weight', 'linear1.bias', 'linear2.weight', 'linear2.bias',
        'norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias']


def test_a_released_checkpoint_loads_with_one_line_naming_it_and_its_backbone(released_model, caplog):
    """What the README promises a user of ytvos_r50.pth: the released layout (with the `position_ids` buffer
    older `transformers` saved) loads, and one line names the file, the backbone and the 822 weights."""
    state_dict = dict(released_model.state_dict(),
                      **{'text_encoder.embeddings.position_ids': torch.zeros(1, 514, dtype=torch.long)})
    args = argparse.Namespace(backbone='resnet50')
    with caplog.at_level('INFO', logger='util.checkpoint'):
        load_checkpoint(released_model, {'model': state_dict}, 'ytvos_r50.pth', describe_model(args))
    assert [record.getMessage() for record in caplog.records] == [
        'loaded ytvos_r50.pth into BIFIT with a resnet50 backbone: all 822 weights match']

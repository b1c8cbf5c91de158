"""The default model has exactly the checkpoint layout of the released models, so that
`ytvos_r50.pth` / `a2d_r50.pth` load with strict=True."""
import json
import shutil

import torch

from models import build_model
from tests.conftest import REFERENCE, TINY_ROBERTA, parse_args

ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, model_type='roberta',
                    architectures=['RobertaModel'])


def read_layout():
    layout = {}
    for line in (REFERENCE / 'state_dict_resnet50.tsv').read_text().splitlines():
        key, shape, dtype = line.split('\t')
        layout[key] = (tuple(json.loads(shape.replace('(', '[').replace(',)', ']').replace(')', ']'))), dtype)
    return layout


def test_default_model_has_the_released_layout(tmp_path):
    text_encoder = tmp_path / 'roberta-base-config'
    text_encoder.mkdir()
    for name in ('tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt'):
        shutil.copy(TINY_ROBERTA / name, text_encoder / name)
    (text_encoder / 'config.json').write_text(json.dumps(ROBERTA_BASE))
    args = parse_args(['--backbone', 'resnet50', '--with_box_refine', '--binary', '--freeze_text_encoder',
                       '--text_encoder', str(text_encoder)])
    with torch.device('meta'):
        model, _, _ = build_model(args)
    layout = read_layout()
    ours = {k: (tuple(v.shape), str(v.dtype).replace('torch.', '')) for k, v in model.state_dict().items()}
    assert len(layout) == 822
    assert sorted(set(layout) - set(ours)) == []
    assert sorted(set(ours) - set(layout)) == []
    assert {k: v for k, v in ours.items() if layout[k] != v} == {}
    assert sum(p.numel() for p in model.parameters()) == 177_906_239

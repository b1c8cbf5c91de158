"""The developer tools, through their command lines (in this process): the reference formulation is a
library, the benchmark takes its text encoder like every entry script, and make_tiny_text_encoder.py writes
the stand-in of roberta-base's size it needs offline."""
import json
import runpy
import sys

import pytest
import torch

from tests.conftest import ROOT
from tools import benchmark, make_tiny_text_encoder

pytestmark = pytest.mark.e2e


def run_script(monkeypatch, path: str, *args: str) -> SystemExit:
    """Run the script at `path` as `python path args...` would, up to the SystemExit it ends with."""
    monkeypatch.setattr(sys, 'argv', [path, *args])
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(str(ROOT / path), run_name='__main__')
    return ended.value


def test_reference_formulation_explains_itself_and_is_no_command(monkeypatch, capsys):
    assert run_script(monkeypatch, 'tools/reference_formulation.py', '--help').code == 0
    assert 'The straightforward formulation' in capsys.readouterr().out
    message = str(run_script(monkeypatch, 'tools/reference_formulation.py').code)
    assert 'is a library' in message and 'tools/benchmark.py' in message


def test_benchmark_without_a_text_encoder_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as ended:
        benchmark.main(['--text_encoder', str(tmp_path / 'nowhere'), '--threads', str(torch.get_num_threads())])
    message = str(ended.value.code)
    assert '\n' not in message and message.startswith(f'--text_encoder {tmp_path / "nowhere"}: not a local RoBERTa')
    assert 'make_tiny_text_encoder.py --out DIR --roberta_base_sized --no_weights' in message


def test_roberta_base_sized_stand_in_has_no_weights(monkeypatch, tmp_path):
    out = tmp_path / 'roberta_base_sized'
    monkeypatch.setattr(sys, 'argv', ['make_tiny_text_encoder.py', '--out', str(out), '--roberta_base_sized',
                                      '--no_weights'])
    make_tiny_text_encoder.main()
    config = json.loads((out / 'config.json').read_text())
    assert (config['hidden_size'], config['num_hidden_layers'], config['num_attention_heads'],
            config['intermediate_size'], config['max_position_embeddings']) == (768, 12, 12, 3072, 514)
    assert (out / 'tokenizer.json').exists() and not list(out.glob('*.safetensors')) + list(out.glob('*.bin'))

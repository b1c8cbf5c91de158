"""The developer tools: the reference formulation is a library, the benchmark takes its text encoder like
every entry script, and make_tiny_text_encoder.py writes the stand-ins they need."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_command


@pytest.mark.e2e
def test_reference_formulation_explains_itself_and_is_no_command():
    assert 'straightforward formulation' in run_command([sys.executable, 'tools/reference_formulation.py', '--help'])
    result = subprocess.run([sys.executable, 'tools/reference_formulation.py'], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1 and 'is a library' in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.e2e
def test_benchmark_without_a_text_encoder_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, 'tools/benchmark.py', '--text_encoder', str(tmp_path / 'nowhere')],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f'--text_encoder {tmp_path / "nowhere"}: not a local RoBERTa directory')
    assert 'make_tiny_text_encoder.py --out DIR --roberta_base_sized --no_weights' in last


@pytest.mark.e2e
def test_roberta_base_sized_stand_in_has_no_weights(tmp_path):
    out = tmp_path / 'roberta_base_sized'
    run_command([sys.executable, 'tools/make_tiny_text_encoder.py', '--out', out, '--roberta_base_sized',
                 '--no_weights'])
    config = json.loads((out / 'config.json').read_text())
    assert (config['hidden_size'], config['num_hidden_layers'], config['num_attention_heads'],
            config['intermediate_size'], config['max_position_embeddings']) == (768, 12, 12, 3072, 514)
    assert (out / 'tokenizer.json').exists() and not list(out.glob('*.safetensors')) + list(out.glob('*.bin'))

"""Issue 11 (part A): every user mistake ends in one line `error: ...` naming the culprit, before any long
work; non-finite weights and outputs are refused; a sentence longer than the text encoder takes is cut,
not fatal; --help explains every option. The command lines run in-process through `util.cli.run`."""
import errno
import logging
import shutil
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

import demo
import inference
import inference_ytvos
import main as train_main
import opts
from engine import check_outputs
from models import text_encoder
from tests.conftest import ROOT, SMALL_MODEL, build_small, offline_flags
from util import cli
from util.checkpoint import save_checkpoint_atomic
from util.logger import setup_logging


def run_command(module, capsys, *flags):
    """Run `module`'s command line with `flags` (plus the small offline model); returns (exit status, stderr)."""
    argv = [*SMALL_MODEL, *offline_flags(), '--short_side', '96', *flags]
    with pytest.raises(SystemExit) as ended:
        cli.run(module.main, partial(opts.parse_args, module.get_parser()), argv)
    return ended.value.code, capsys.readouterr().err


def assert_one_line_error(status, stderr: str, *expected: str) -> str:
    """The command failed with one `error:` line holding `expected`, no traceback and no progress bar."""
    assert status == 1
    assert 'Traceback' not in stderr
    assert 'expressions:' not in stderr and 'it/s' not in stderr, 'no progress bar before the error'
    errors = [line for line in stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    for text in expected:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def ytvos_flags(synthetic_data, checkpoint, output, *flags):
    return ['--ytvos_path', str(synthetic_data / 'ref-youtube-vos'), '--resume', str(checkpoint),
            '--output_dir', str(output), '--ngpu', '1', *flags]


@pytest.fixture(scope='module')
def nan_checkpoint(small_checkpoint, tmp_path_factory):
    checkpoint = torch.load(small_checkpoint, weights_only=False)
    checkpoint['model']['query_embed.weight'][0, 0] = float('nan')
    path = tmp_path_factory.mktemp('nan') / 'nan.pth'
    torch.save(checkpoint, path)
    return path


# Problem 1: no silent wrong result.

def test_nan_weights_stop_inference_naming_file_and_parameter(synthetic_data, nan_checkpoint, tmp_path, capsys):
    status, err = run_command(inference_ytvos, capsys, *ytvos_flags(synthetic_data, nan_checkpoint, tmp_path))
    assert_one_line_error(status, err, str(nan_checkpoint), 'query_embed.weight', 'NaN or infinite')
    assert not (tmp_path / 'submission.zip').exists() and not (tmp_path / 'valid').exists()


def test_nan_weights_stop_the_demo(nan_checkpoint, tmp_path, capsys):
    frames = tmp_path / 'frames'
    frames.mkdir()
    Image.new('RGB', (64, 48)).save(frames / '00000.png')
    status, err = run_command(demo, capsys, '--video', str(frames), '--text', 'a dog', '--resume',
                              str(nan_checkpoint), '--output', str(tmp_path / 'out.gif'))
    assert_one_line_error(status, err, 'query_embed.weight')
    assert not (tmp_path / 'out.gif').exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_nan_outputs_warn_and_fail_without_a_submission(synthetic_data, small_checkpoint, tmp_path, capsys,
                                                        monkeypatch):
    real = inference.predict_video

    def nan_for_the_first(model, clip, texts, device, args):
        all_outputs = real(model, clip, texts, device, args)
        for text, outputs in zip(texts, all_outputs):
            if text == first_text:
                outputs['pred_masks'] = torch.full_like(outputs['pred_masks'], float('nan'))
        return all_outputs

    setup_logging()  # to this test's captured stdout
    expressions = inference_ytvos.expressions_to_segment(
        inference_ytvos.get_parser().parse_args(ytvos_flags(synthetic_data, small_checkpoint, tmp_path, '--no_zip')))
    first_text = expressions[0].text
    monkeypatch.setattr(inference, 'predict_video', nan_for_the_first)
    argv = [*SMALL_MODEL, *offline_flags(), '--short_side', '96',
            *ytvos_flags(synthetic_data, small_checkpoint, tmp_path)]
    with pytest.raises(SystemExit) as ended:
        cli.run(inference_ytvos.main, partial(opts.parse_args, inference_ytvos.get_parser()), argv)
    captured = capsys.readouterr()
    assert ended.value.code == 1 and 'Traceback' not in captured.err
    assert captured.err.splitlines()[-1].startswith('error: 1 of ') and 'NaN or infinite outputs' in captured.err
    warnings = [line for line in captured.out.splitlines() if 'NON-FINITE' in line]
    assert len(warnings) == 1 and expressions[0].video in warnings[0] and first_text in warnings[0]
    assert not (tmp_path / 'submission.zip').exists(), 'no ready-to-upload zip of a broken run'
    assert (tmp_path / 'valid' / expressions[-1].video / expressions[-1].exp_id).is_dir(), 'the others are written'


def test_evaluation_refuses_nan_outputs():
    outputs = {'pred_logits': torch.zeros(1, 2, 3, 1), 'pred_masks': torch.full((1, 2, 3, 4, 4), float('nan'))}
    with pytest.raises(cli.UserError, match="NaN or infinite outputs for \\['a dog'\\]: no metric"):
        check_outputs(outputs, ['a dog'])


# Problem 4: user mistakes are one line, found before any worker or progress bar starts.

def test_checkpoint_problems_are_one_line_before_the_bar(synthetic_data, small_checkpoint, tmp_path, capsys):
    not_a_checkpoint = tmp_path / 'notes.pth'
    not_a_checkpoint.write_text('hello')
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(small_checkpoint.read_bytes()[:5000])
    other = tmp_path / 'other.pth'
    torch.save({'model': {'backbone.0.body.conv1.weight': torch.zeros(1)}}, other)
    cases = [(tmp_path / 'missing.pth', 'checkpoint not found'), (not_a_checkpoint, 'not a readable PyTorch'),
             (truncated, 'not a readable PyTorch'), (other, 'does not fit this model')]
    for path, reason in cases:
        status, err = run_command(inference_ytvos, capsys, *ytvos_flags(synthetic_data, path, tmp_path / 'out'))
        assert_one_line_error(status, err, str(path), reason)


def test_missing_meta_and_frames_are_one_line(synthetic_data, small_checkpoint, tmp_path, capsys):
    status, err = run_command(inference_ytvos, capsys, '--ytvos_path', str(tmp_path / 'nowhere'), '--resume',
                              str(small_checkpoint), '--output_dir', str(tmp_path / 'out'))
    assert_one_line_error(status, err, 'meta file not found', 'meta_expressions/valid/meta_expressions.json')
    root = tmp_path / 'ytvos'
    shutil.copytree(synthetic_data / 'ref-youtube-vos', root)
    video = sorted((root / 'valid' / 'JPEGImages').iterdir())[-1]
    for frame in video.iterdir():
        frame.unlink()
    status, err = run_command(inference_ytvos, capsys, '--ytvos_path', str(root), '--resume', str(small_checkpoint),
                              '--output_dir', str(tmp_path / 'out'), '--ngpu', '1')
    assert_one_line_error(status, err, f'video {video.name} not found', str(video))


@pytest.mark.parametrize('flags, option', [(['--num_frames', '0'], '--num_frames'),
                                           (['--batch_size', '0'], '--batch_size'),
                                           (['--lr', '-1'], '--lr'), (['--lr_backbone', '-1'], '--lr_backbone'),
                                           (['--threshold', '2'], '--threshold')])
def test_impossible_options_are_one_line(flags, option, capsys, monkeypatch):
    monkeypatch.setattr(train_main, 'build_model', lambda args: pytest.fail('validation comes first'))
    status, err = run_command(train_main, capsys, *flags)
    assert_one_line_error(status, err, f'argument {option}:', flags[1])


def test_unreadable_video_is_one_line(small_checkpoint, tmp_path, capsys):
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'not a video')
    status, err = run_command(demo, capsys, '--video', str(broken), '--text', 'a dog', '--resume',
                              str(small_checkpoint), '--output', str(tmp_path / 'o.gif'))
    assert_one_line_error(status, err, str(broken), 'cannot be decoded')


def test_offline_text_encoder_is_quick_and_says_how(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(text_encoder, 'cached', lambda name: False)
    monkeypatch.setattr(text_encoder.constants, 'HF_HUB_OFFLINE', False)
    for variable in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(variable, raising=False)

    def offline(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, 'Network is unreachable')

    monkeypatch.setattr(text_encoder.socket, 'create_connection', offline)
    monkeypatch.setattr(text_encoder.AutoTokenizer, 'from_pretrained', lambda *a, **k: pytest.fail('no download'))
    with pytest.raises(SystemExit) as ended:
        cli.run(train_main.main, partial(opts.parse_args, train_main.get_parser()),
                [*SMALL_MODEL, '--backbone_pretrained', 'none', '--device', 'cpu', '--text_encoder', 'roberta-base',
                 '--output_dir', str(tmp_path)])
    assert_one_line_error(ended.value.code, capsys.readouterr().err, "'roberta-base'", 'cannot be reached',
                          '--text_encoder DIR')


def test_disk_full_is_said_as_disk_full_naming_the_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / 'checkpoint.pth'

    def full_disk(obj, f):
        f.write(b'x')
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(SystemExit) as ended:
        cli.run(lambda args: save_checkpoint_atomic({'epoch': 0}, str(target)), list, [])
    assert_one_line_error(ended.value.code, capsys.readouterr().err, 'disk full', str(target))
    assert not list(tmp_path.iterdir()), 'no partial or temporary file is left'


def test_debug_shows_the_traceback(small_checkpoint, tmp_path, monkeypatch):
    parse = partial(opts.parse_args, inference_ytvos.get_parser())
    argv = [*SMALL_MODEL, *offline_flags(), '--resume', str(tmp_path / 'missing.pth'), '--output_dir', str(tmp_path)]
    with pytest.raises(cli.UserError, match='holds no images'):
        cli.run(demo.main, partial(opts.parse_args, demo.get_parser()),
                [*argv, '--video', str(tmp_path), '--text', 'x', '--debug'])
    monkeypatch.setenv(cli.DEBUG_VARIABLE, '1')
    with pytest.raises(cli.UserError):
        cli.run(inference_ytvos.main, parse, [*argv, '--num_frames', '0'])


# Problem 5: one long sentence never stops a run.

def test_long_sentence_is_cut_to_the_encoder_limit_with_a_warning(caplog):
    model, _ = build_small()
    limit = model.max_words()
    config = model.text_encoder.config
    assert limit == config.max_position_embeddings - config.pad_token_id - 1
    long_sentence = ' '.join(['the small red dog'] * 200)
    short = model.tokenizer(['a dog'], padding='longest', return_tensors='pt')
    with caplog.at_level(logging.WARNING):
        tokens = model.tokenize(['a dog', long_sentence])
        words, padding = model.encode_text(['a dog', long_sentence], torch.device('cpu'))
    assert tokens['input_ids'].shape[1] == limit and words.shape[0] == limit
    assert torch.equal(tokens['input_ids'][0, :short['input_ids'].shape[1]], short['input_ids'][0])
    assert tokens['input_ids'][1, -1] == model.tokenizer.eos_token_id, 'the cut sentence keeps its end token'
    warnings = [r.getMessage() for r in caplog.records if 'more than the' in r.getMessage()]
    assert warnings and 'the small red dog' in warnings[0] and f'cut to its first {limit}' in warnings[0]
    caplog.clear()
    assert torch.equal(model.tokenize(['a dog'])['input_ids'], short['input_ids']), 'short sentences unchanged'
    assert not caplog.records


# Problem 8: output locations are checked before inference, with the right advice.

def test_demo_checks_its_output_before_inference(small_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, 'load_inference_model', lambda *a: pytest.fail('the output is checked first'))
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    frames = tmp_path / 'frames'
    frames.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(frames / '00000.png')
    output = blocker / 'out.mp4'
    status, err = run_command(demo, capsys, '--video', str(frames), '--text', 'a dog', '--resume',
                              str(small_checkpoint), '--output', str(output))
    line = assert_one_line_error(status, err, f'--output {output}', 'cannot write in', 'choose a location')
    assert '.gif' not in line


# Problem 9: --help.

@pytest.mark.parametrize('module', [train_main, inference_ytvos, demo])
def test_every_option_is_explained_with_its_default(module):
    parser = module.get_parser()
    shown = [a for a in parser._actions if a.help != '==SUPPRESS==' and a.option_strings and a.dest != 'help']
    assert all(a.help for a in shown), [a.dest for a in shown if not a.help]
    text = parser.format_help()
    assert text.count('(default:') >= len([a for a in shown if a.default is not None]) - 2
    assert 'torchvision' in text and text.count("default: None)") >= 1
    if module is not train_main:
        assert '--lr ' not in text and '--set_cost_class' not in text and '--epochs' not in text
        assert module.get_parser().parse_args([*(['--video', 'v', '--text', 't'] if module is demo else []),
                                               '--lr', '1e-4']).lr == 1e-4, 'training options are still accepted'


def test_config_with_an_unknown_flag_names_the_file_and_flag(tmp_path, capsys):
    recipe = tmp_path / 'recipe.args'
    recipe.write_text('--lr 1e-4\n--no_such_flag 3\n')
    status, err = run_command(train_main, capsys, '--config', str(recipe))
    assert_one_line_error(status, err, f'--config {recipe}', 'unknown flag --no_such_flag')


@pytest.mark.e2e
@pytest.mark.slow
def test_reference_formulation_help_works():
    done = subprocess.run([sys.executable, 'tools/reference_formulation.py', '--help'], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and 'usage:' in done.stdout and 'Traceback' not in done.stderr


# Problem 10: CPU threads are documented.

def test_thread_settings_are_documented():
    for doc in ('README.md', 'install.md'):
        assert 'OMP_NUM_THREADS' in (ROOT / doc).read_text(), doc

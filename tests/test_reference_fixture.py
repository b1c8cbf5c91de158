"""Faithfulness: the network and the losses compute what the original implementation computed
(`../shared/reference/fixture_a.pt`), with weights filled by name (`fill.py`)."""
import pytest
import torch

from models import build_model
from tests.conftest import load_fill, parse_args

LOSS_ATOL = 1e-4


@pytest.fixture(scope='module')
def reference_run(fixture_a):
    args = parse_args(fixture_a['flags'])
    model, criterion, _ = build_model(args)
    model.load_state_dict(load_fill()(model.state_dict(), fixture_a['seed']), strict=True)
    model.eval()
    with torch.no_grad():
        outputs = model(fixture_a['videos'], fixture_a['captions'],
                        [{'size': t['size']} for t in fixture_a['targets']])
        losses = criterion(outputs, fixture_a['targets'])
    return outputs, losses, criterion


def assert_output_close(ours: torch.Tensor, reference: torch.Tensor, name: str) -> None:
    """Logits and boxes within 1e-4; mask logits within 1e-4 of their largest magnitude."""
    assert ours.shape == reference.shape, name
    atol = 1e-4 * reference.abs().max().item() if 'mask' in name else 1e-4
    err = (ours - reference).abs().max().item()
    assert err <= atol, f'{name}: max abs difference {err:.3e} > {atol:.3e}'


@pytest.mark.parametrize('key', ['pred_logits', 'pred_boxes', 'pred_masks', 'reference_points'])
def test_outputs_match_reference(reference_run, fixture_a, key):
    assert_output_close(reference_run[0][key], fixture_a['outputs'][key], key)


def test_auxiliary_outputs_match_reference(reference_run, fixture_a):
    ours, reference = reference_run[0]['aux_outputs'], fixture_a['outputs']['aux_outputs']
    assert len(ours) == len(reference)
    for i, (layer_ours, layer_reference) in enumerate(zip(ours, reference)):
        assert layer_ours.keys() == layer_reference.keys()
        for key in layer_reference:
            assert_output_close(layer_ours[key], layer_reference[key], f'aux_outputs[{i}].{key}')


def test_losses_match_reference(reference_run, fixture_a):
    losses, criterion = reference_run[1], reference_run[2]
    assert set(losses) == set(fixture_a['losses'])
    for name, value in fixture_a['losses'].items():
        assert losses[name].item() == pytest.approx(value, abs=LOSS_ATOL), name
    assert criterion.weight_dict == fixture_a['weight_dict']

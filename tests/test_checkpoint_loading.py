"""One checkpoint loader for every entry script: good files load, wrong ones stop clearly."""
import pytest
import torch
import torchvision

from models import build_model
from models.backbone import ResNetBody
from models.text_encoder import load_text_encoder
from tests.conftest import SMALL_FULL_WIDTH, parse_args
from util.checkpoint import load_checkpoint_file, save_checkpoint_atomic


def build(flags=()):
    return build_model(parse_args(SMALL_FULL_WIDTH + list(flags)))[0]


@pytest.fixture(scope='module')
def trained():
    torch.manual_seed(1)
    model = build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize('layout', ['model_key', 'bare', 'ddp_prefix', 'old_transformers'])
def test_good_checkpoints_load(tmp_path, trained, layout):
    state_dict = trained.state_dict()
    if layout == 'ddp_prefix':
        state_dict = {f'module.{k}': v for k, v in state_dict.items()}
    if layout == 'old_transformers':
        state_dict = dict(state_dict, **{'text_encoder.embeddings.position_ids': torch.arange(66)[None]})
    checkpoint = state_dict if layout == 'bare' else {'model': state_dict, 'epoch': 3}
    path = tmp_path / 'checkpoint.pth'
    torch.save(checkpoint, path)
    model = build()
    load_checkpoint_file(model, str(path))
    assert_same_weights(model, trained)


def test_checkpoint_of_another_backbone_is_a_clear_error(tmp_path, trained):
    path = tmp_path / 'r18.pth'
    torch.save({'model': trained.state_dict()}, path)
    model = build(['--backbone', 'resnet34'])
    with pytest.raises(RuntimeError) as error:
        load_checkpoint_file(model, str(path))
    assert 'missing keys: backbone.0.body.layer1.2.conv1.weight' in str(error.value)
    model = build(['--num_queries', '5'])
    with pytest.raises(RuntimeError, match=r'shape mismatches: query_embed.weight: \(3, 256\) vs \(5, 256\)'):
        load_checkpoint_file(model, str(path))


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(RuntimeError) as error:
        load_checkpoint_file(build(), str(path))
    message = str(error.value)
    assert 'does not fit this model' in message and 'missing keys: transformer.level_embed' in message
    assert 'unexpected keys: conv1.weight' in message


def test_missing_and_unreadable_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        load_checkpoint_file(build(), str(tmp_path / 'nothing.pth'))
    (tmp_path / 'text.pth').write_text('not a checkpoint')
    with pytest.raises(RuntimeError, match='not a readable PyTorch checkpoint'):
        load_checkpoint_file(build(), str(tmp_path / 'text.pth'))


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / 'checkpoint.pth'
    save_checkpoint_atomic({'epoch': 1}, str(path))

    def crash(obj, f):
        f.write(b'partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint_atomic({'epoch': 2}, str(path))
    monkeypatch.undo()
    assert torch.load(path)['epoch'] == 1
    assert [p.name for p in tmp_path.iterdir()] == ['checkpoint.pth']


def test_backbone_weights_from_a_local_file(tmp_path):
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / 'r18.pth')
    body = ResNetBody('resnet18', train_backbone=True, dilation=False, pretrained=str(tmp_path / 'r18.pth'))
    assert torch.equal(body.body.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(body.body.bn1.running_var, reference.bn1.running_var)


def test_failed_imagenet_download_names_the_offline_options(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError('no network')

    monkeypatch.setattr(torchvision.models.WeightsEnum, 'get_state_dict', offline)
    with pytest.raises(RuntimeError, match='--backbone_pretrained PATH.*--backbone_pretrained none'):
        ResNetBody('resnet18', train_backbone=True, dilation=False, pretrained=None)


def test_imagenet_weights_are_not_fetched_when_a_checkpoint_supplies_the_model(monkeypatch):
    def fetch(self, *args, **kwargs):
        raise AssertionError('ImageNet weights fetched although --resume supplies the model')

    monkeypatch.setattr(torchvision.models.WeightsEnum, 'get_state_dict', fetch)
    args = parse_args(SMALL_FULL_WIDTH + ['--resume', 'some.pth'])
    args.backbone_pretrained = None
    build_model(args)


def test_unavailable_text_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match='--text_encoder DIR'):
        load_text_encoder(str(tmp_path / 'no-such-roberta'), weights_from_checkpoint=False)

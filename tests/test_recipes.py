"""The release's recipes (`configs/`) through their launch scripts (`scripts/`), pointed at synthetic data
and the CPU: pretraining -> Ref-YTVOS finetuning and submission, A2D training, joint training, Ref-DAVIS17
inference and J&F, JHMDB evaluation, MeViS finetuning, valid_u J&F and valid submission. One test per recipe;
a recipe that needs another's checkpoint runs it first (once per session), and is skipped, naming it, when that
one failed.

Only what cannot run here changes: data paths, the offline text encoder and backbone weights, small frames,
3-frame clips and one epoch per recipe so that the chain takes minutes on 2 cores.
"""
import zipfile
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests.conftest import free_port, generate_synthetic, offline_flags, run_command

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


# The command of each recipe, given the folder of every recipe's output.
COMMANDS: Dict[str, Callable[[Path], List]] = {
    'pretrain': lambda out: ['bash', 'scripts/dist_pretrain.sh', out / 'pretrain'],
    'ytvos': lambda out: ['bash', 'scripts/dist_train_test_ytvos.sh', out / 'ytvos',
                          out / 'pretrain' / 'checkpoint.pth'],
    'a2d': lambda out: ['bash', 'scripts/dist_train_a2d.sh', out / 'a2d', out / 'pretrain' / 'checkpoint.pth'],
    'joint': lambda out: ['bash', 'scripts/dist_joint_train_ytvos.sh', out / 'joint'],
    'davis': lambda out: ['bash', 'scripts/dist_test_davis.sh', out / 'davis', out / 'ytvos' / 'checkpoint.pth'],
    'jhmdb': lambda out: ['python', 'main.py', '--config', 'configs/jhmdb_r50.args',
                          '--resume', out / 'a2d' / 'checkpoint.pth', '--output_dir', out / 'jhmdb'],
    'mevis': lambda out: ['bash', 'scripts/dist_train_test_mevis.sh', out / 'mevis',
                          out / 'pretrain' / 'checkpoint.pth'],
}
# The recipe whose checkpoint a recipe starts from.
NEEDS = {'ytvos': 'pretrain', 'a2d': 'pretrain', 'davis': 'ytvos', 'jhmdb': 'a2d', 'mevis': 'pretrain'}


class Recipes:
    """Runs each recipe once, its dependency first; remembers logs and failures."""

    def __init__(self, root: Path):
        offline = offline_flags()
        data = generate_synthetic(root / 'data', '--videos', '1', '--frames', '5', '--mevis_train', '1',
                                  '--mevis_valid_u', '1', '--mevis_valid', '1', '--mevis_frames', '5',
                                  '--benchmarks', 'ytvos', 'davis', 'a2d', 'jhmdb', 'refcoco', 'mevis')
        self.root = root
        self.out = root / 'runs'
        self.overrides = [*offline, '--max_size', '96', '--short_side', '96', '--num_workers', '0',
                          '--epochs', '1', '--num_frames', '3', '--coco_path', data / 'coco',
                          '--ytvos_path', data / 'ref-youtube-vos', '--a2d_path', data / 'a2d_sentences',
                          '--jhmdb_path', data / 'jhmdb_sentences', '--davis_path', data / 'ref-davis',
                          '--mevis_path', data / 'mevis']
        self.logs: Dict[str, str] = {}
        self.failed: Dict[str, str] = {}

    def run(self, name: str) -> str:
        """The log of recipe `name`, run now unless it ran before in this session."""
        dependency = NEEDS.get(name)
        if dependency is not None:
            if dependency not in self.logs and dependency not in self.failed:
                try:
                    self.run(dependency)
                except AssertionError:
                    pass
            if dependency in self.failed:
                pytest.skip(f'needs the checkpoint of the {dependency} recipe, which failed')
        if name in self.failed:
            pytest.fail(f'the {name} recipe failed earlier in this session:\n{self.failed[name]}')
        if name not in self.logs:
            try:
                self.logs[name] = run_command([*COMMANDS[name](self.out), *self.overrides], self.root / f'{name}.log',
                                              GPUS='1', PORT=str(free_port()), OMP_NUM_THREADS='2')
            except AssertionError as error:
                self.failed[name] = str(error)
                raise
        return self.logs[name]


@pytest.fixture(scope='session')
def recipes(tmp_path_factory) -> Recipes:
    return Recipes(tmp_path_factory.mktemp('recipes'))


def check_pretrain(log: str, out: Path) -> None:
    assert (out / 'pretrain' / 'checkpoint.pth').exists()


def check_ytvos(log: str, out: Path) -> None:
    assert 'finetuning from' in log
    with zipfile.ZipFile(out / 'ytvos' / 'submission.zip') as archive:
        assert archive.namelist() and all(n.startswith('Annotations/') for n in archive.namelist())


def check_a2d(log: str, out: Path) -> None:
    assert 'evaluation: mAP 0.5:0.95' in log


def check_joint(log: str, out: Path) -> None:
    assert (out / 'joint' / 'submission.zip').exists()


def check_davis(log: str, out: Path) -> None:
    assert log.count('Global results') == 4 and 'Mean of the global results of 4 folders' in log
    assert all((out / 'davis' / 'valid' / f'anno_{a}' / 'global_results-val.csv').exists() for a in range(4))
    assert (out / 'davis' / 'valid' / 'global_results-val-mean.csv').exists()


def check_jhmdb(log: str, out: Path) -> None:
    assert 'evaluation: mAP 0.5:0.95' in log and 'overall_iou' in log


def check_mevis(log: str, out: Path) -> None:
    assert 'finetuning from' in log and 'valid_u: J&F ' in log
    assert (out / 'mevis' / 'valid_u' / 'global_results-valid_u.csv').exists()
    with zipfile.ZipFile(out / 'mevis' / 'submission.zip') as archive:
        names = archive.namelist()
    assert names and all(n.startswith('valid_') and n.endswith('.png') for n in names), 'video folders at the root'


CHECKS: Dict[str, Callable[[str, Path], None]] = {
    'pretrain': check_pretrain, 'ytvos': check_ytvos, 'a2d': check_a2d, 'joint': check_joint, 'davis': check_davis,
    'jhmdb': check_jhmdb, 'mevis': check_mevis}


@pytest.mark.parametrize('recipe', list(COMMANDS))
def test_recipe_runs_on_synthetic_data(recipes, recipe):
    CHECKS[recipe](recipes.run(recipe), recipes.out)

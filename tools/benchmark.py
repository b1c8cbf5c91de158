"""Speed and memory of BIFIT's forward pass and training step, against the straightforward formulation;
the throughput of dataset inference, against running the whole network per expression.

    python tools/benchmark.py                                  # default model, 5 frames 360x640, CPU, 2 threads
    python tools/benchmark.py --frames 24 --formulations fast --skip_training
    python tools/benchmark.py --device cuda --amp

The model: any options of opts.py (default `--with_box_refine --binary --freeze_text_encoder`,
ResNet-50 with random weights); the text encoder is `--text_encoder` as for every entry script (default
roberta-base, which needs the network or the Hugging Face cache). Offline, a local stand-in of its size
serves as well (random weights):

    python tools/make_tiny_text_encoder.py --out /tmp/roberta_base_sized --roberta_base_sized --no_weights
    python tools/benchmark.py --text_encoder /tmp/roberta_base_sized

Random weights everywhere, with random (rather than zero) sampling-offset and attention-weight
projections so that every query of the deformable attention samples its own locations.

For each formulation (`fast`: the model as it is; `checkpointed`: the same with
`--activation_checkpointing`, training step only; `reference`: the same weights run in the
straightforward formulation of `tools/reference_formulation.py`) it measures the eval-mode forward
pass on one clip (no_grad; min and median of `--repeats` runs after a warm-up; the runs of the two
formulations are interleaved so that both see the same machine load), the peak memory of the
warm-up pass (CPU: the largest increase of the resident set size over its value before the pass,
via VmHWM; CUDA: `torch.cuda.max_memory_allocated` over the allocation before the pass), and the
training step (forward, loss, backward; the clip padded to a multiple of 32 as the training
loader does; peak memory of a warm-up step, then the min of `--train_repeats` steps; the steps of the
formulations interleaved; each formulation's time and memory also as a ratio to the reference's). The
outputs of the two warm-up passes must agree within the tolerances of the reference fixture
(logits, boxes, reference points 1e-4; mask logits 1e-4 of their largest magnitude), and the losses
and gradients of the warm-up training steps (1e-4 a loss; 1e-2 the norm of a parameter's gradient difference
relative to its gradient's, see `training_differences`): the exit status is 1 when they do not. Every dropout
is off (`--keep_dropout` keeps them; the losses are then not compared). The load average before and
after is printed: the machine may be shared, so compare timings from one run.

The dataset section (`--sections dataset`; both sections by default) times inference_ytvos.py's work on a
synthetic Ref-YouTube-VOS set (`--dataset_videos` videos of `--frames` frames at `--height` x `--width`,
`--dataset_expressions` expressions each; `--clip_len` frames per forward pass) in expressions per hour:
each clip's visual part computed once for all the expressions of its video, against the whole network run
per expression; the two alternate video by video and must write identical PNGs (exit status 1 otherwise).

    python tools/benchmark.py --sections dataset --text_encoder /tmp/roberta_base_sized
"""
import argparse
import contextlib
import copy
import ctypes
import gc
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference import segment_video_expressions  # noqa: E402
from models import build_model  # noqa: E402
from models.ops import MSDeformAttn  # noqa: E402
from models.text_encoder import TextEncoderUnavailable  # noqa: E402
from opts import get_args_parser  # noqa: E402
from tools import make_synthetic_data  # noqa: E402
from tools.reference_formulation import reference_formulation, switch_off_dropout  # noqa: E402
from util import cli  # noqa: E402
from util.files import read_json  # noqa: E402
from util.mask_folders import Expression  # noqa: E402
from util.misc import nested_tensor_from_videos_list  # noqa: E402
from util.precision import autocast, to_float32  # noqa: E402

CAPTION = 'a man in a red shirt riding a bike on the left side of the road'
FORMULATIONS = ('fast', 'checkpointed', 'reference')
SECTIONS = ('clip', 'dataset')
ATOL = 1e-4


def get_benchmark_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser('BIFIT benchmark', parents=[get_args_parser()])
    group = parser.add_argument_group('benchmark')
    group.add_argument('--frames', default=5, type=int, help='frames per clip')
    group.add_argument('--height', default=360, type=int)
    group.add_argument('--width', default=640, type=int)
    group.add_argument('--threads', default=2, type=int, help='torch.set_num_threads (CPU)')
    group.add_argument('--repeats', default=3, type=int, help='timed forward passes per formulation')
    group.add_argument('--train_repeats', default=1, type=int, help='timed training steps per formulation')
    group.add_argument('--skip_training', action='store_true', help='time the forward pass only')
    group.add_argument('--formulations', default=list(FORMULATIONS), nargs='+', choices=FORMULATIONS)
    group.add_argument('--benchmark_seed', default=0, type=int, help='seed of the weights and the clip')
    group.add_argument('--sections', default=list(SECTIONS), nargs='+', choices=SECTIONS,
                       help='clip: forward pass and training step on one clip; dataset: dataset-inference throughput')
    group.add_argument('--dataset_videos', default=2, type=int, help='videos of the synthetic Ref-YouTube-VOS set')
    group.add_argument('--dataset_expressions', default=4, type=int, help='expressions per video')
    group.add_argument('--clip_len', default=0, type=int,
                       help='frames per forward pass of the dataset inference (0: whole videos, as inference_ytvos.py)')
    group.add_argument('--keep_dropout', action='store_true',
                       help="train with the model's dropout (default: every dropout off, the text encoder's and the "
                            "pixel decoder's fixed 0.1 included, so that the formulations' losses and gradients can "
                            "be compared)")
    parser.set_defaults(with_box_refine=True, binary=True, freeze_text_encoder=True, backbone_pretrained='none',
                        device='cpu')
    return parser


def build(args) -> tuple:
    """The model (eval mode, on the device, seeded random weights) and its criterion."""
    torch.manual_seed(args.benchmark_seed)
    model, criterion, _ = build_model(args)
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            nn.init.normal_(module.sampling_offsets.weight, std=0.01)
            nn.init.normal_(module.attention_weights.weight, std=0.01)
    if not args.keep_dropout:
        switch_off_dropout(model)
    return model.to(args.device).eval(), criterion.to(args.device)


def synthetic_clip(args) -> tuple:
    """A random normalised clip `[T, 3, H, W]` and its training target (a box-shaped mask moving right)."""
    generator = torch.Generator().manual_seed(args.benchmark_seed)
    t, h, w = args.frames, args.height, args.width
    video = torch.randn(t, 3, h, w, generator=generator)
    masks = torch.zeros(t, h, w)
    boxes = torch.zeros(t, 4)
    for i in range(t):
        x0, y0 = int(w * (0.2 + 0.4 * i / max(t - 1, 1))), h // 4
        masks[i, y0:y0 + h // 2, x0:x0 + w // 4] = 1
        boxes[i] = torch.tensor([(x0 + w / 8) / w, 0.5, 0.25, 0.5])
    target = {'size': torch.tensor([h, w]), 'labels': torch.zeros(t, dtype=torch.long), 'boxes': boxes,
              'masks': masks, 'valid': torch.ones(t, dtype=torch.long)}
    return video, target


class PeakMemory:
    """Peak memory increase (bytes) inside the `with` block, over the usage when it was entered.

    CUDA: `torch.cuda.max_memory_allocated`. CPU: the resident set size; freed heap memory is first
    returned to the system (`malloc_trim`) so that the block cannot reuse it unseen, and the peak
    (VmHWM) is reset through /proc/self/clear_refs, or, where that is not allowed, RSS is sampled.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.increase = 0
        self._sampling = False
        self._sampled_peak = 0

    @staticmethod
    def _status_kb(field: str) -> int:
        with open('/proc/self/status') as status:
            return int(re.search(rf'^{field}:\s+(\d+) kB', status.read(), re.MULTILINE).group(1))

    def _sample(self) -> None:
        while self._sampling:
            self._sampled_peak = max(self._sampled_peak, self._status_kb('VmRSS'))
            time.sleep(0.001)

    def __enter__(self) -> 'PeakMemory':
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        self._start = self._status_kb('VmRSS')
        try:
            with open('/proc/self/clear_refs', 'w') as clear_refs:
                clear_refs.write('5')
            self._sampler = None
        except OSError:
            self._sampling, self._sampled_peak = True, self._start
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.increase = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._sampler is None:
            self.increase = (self._status_kb('VmHWM') - self._start) * 1024
        else:
            self._sampling = False
            self._sampler.join()
            self.increase = (self._sampled_peak - self._start) * 1024


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of `run()`, synchronising CUDA before and after."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def activation_checkpointing(model: nn.Module):
    """The model's `--activation_checkpointing` switched on inside the block (every module that has the
    switch: ResNet body, deformable encoder, pixel decoder), restored on exit."""
    switches = [module for module in model.modules() if hasattr(module, 'activation_checkpointing')]
    if not switches:
        raise RuntimeError('no module of the model has the activation_checkpointing switch any more')
    saved = [module.activation_checkpointing for module in switches]
    for module in switches:
        module.activation_checkpointing = True
    try:
        yield
    finally:
        for module, value in zip(switches, saved):
            module.activation_checkpointing = value


class Formulation:
    """Runs the model in one formulation: forward passes and training steps."""

    def __init__(self, name: str, model: nn.Module, criterion: nn.Module, video: torch.Tensor, target: Dict, args):
        self.name = name
        self.model = model
        self.criterion = criterion
        self.args = args
        self.device = torch.device(args.device)
        self.video = video.to(self.device)
        self.eval_targets = [{'size': target['size'].to(self.device)}]
        self.train_samples = nested_tensor_from_videos_list([self.video], size_divisibility=32)
        self.train_targets = [{k: v.to(self.device) for k, v in target.items()}]
        self.forward_times: List[float] = []
        self.train_times: List[float] = []
        self.forward_memory = 0
        self.train_memory = 0
        self.losses: Dict[str, float] = {}
        self.gradients: Dict[str, torch.Tensor] = {}

    def context(self):
        if self.name == 'reference':
            return reference_formulation(self.model)
        if self.name == 'checkpointed':
            return activation_checkpointing(self.model)
        return contextlib.nullcontext()

    def forward(self) -> Dict:
        self.model.eval()
        with self.context(), torch.no_grad(), autocast(self.device, self.args.amp):
            return self.model([self.video], [CAPTION], self.eval_targets)

    def train_step(self, record: bool = False) -> None:
        """Forward, loss and backward on the training clip; `record`: keep the losses and the gradients."""
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        with self.context():
            with autocast(self.device, self.args.amp):
                outputs = self.model(self.train_samples, [CAPTION], self.train_targets)
            losses = self.criterion(to_float32(outputs), self.train_targets)
            total = sum(losses[k] * self.criterion.weight_dict[k] for k in losses)
            total.backward()
        if record:
            self.losses = {name: value.item() for name, value in losses.items()}
            self.gradients = {name: parameter.grad.clone() for name, parameter in self.model.named_parameters()
                              if parameter.grad is not None}
        self.model.zero_grad(set_to_none=True)

    def first_forward(self) -> Dict:
        """The first (warm-up) forward pass: its outputs, and its peak memory recorded."""
        with PeakMemory(self.device) as peak:
            outputs = self.forward()
        self.forward_memory = peak.increase
        return outputs

    def measure_train_memory(self) -> None:
        """A warm-up training step, its peak memory, losses and gradients recorded."""
        with PeakMemory(self.device) as peak:
            self.train_step(record=True)
        self.train_memory = peak.increase


def training_differences(ours: Formulation, reference: Formulation) -> Dict[str, tuple]:
    """The largest loss difference and the largest gradient difference from the reference's warm-up training
    step, each as (name, difference, tolerance): |difference| of a loss (tolerance 1e-4, the tests'), and of a
    parameter's gradient the norm of the difference over the norm of the reference's gradient (tolerance 1e-2:
    float32 rounding, amplified where a relu or a norm's statistics turn, moves it by about 1e-3 with either
    formulation against a float64 step; a formulation computing another function by far more)."""
    loss_name = max(reference.losses, key=lambda name: abs(ours.losses[name] - reference.losses[name]))
    if ours.gradients.keys() != reference.gradients.keys():
        gradient = ('(different parameters have gradients)', float('inf'))
    else:
        gradient = max(((name, ((ours.gradients[name] - grad).norm() / grad.norm().clamp(min=1e-30)).item())
                        for name, grad in reference.gradients.items()), key=lambda pair: pair[1])
    return {'loss': (loss_name, abs(ours.losses[loss_name] - reference.losses[loss_name]), 1e-4),
            'relative gradient': (*gradient, 1e-2)}


def output_differences(ours: Dict, reference: Dict) -> Dict[str, tuple]:
    """name -> (max |difference|, tolerance) for every output tensor, auxiliary layers included."""
    pairs = [(key, ours[key], reference[key]) for key in ('pred_logits', 'pred_boxes', 'pred_masks', 'reference_points')
             if key in reference]
    for i, (layer_ours, layer_reference) in enumerate(zip(ours.get('aux_outputs', []),
                                                          reference.get('aux_outputs', []))):
        pairs += [(f'aux_outputs[{i}].{key}', layer_ours[key], layer_reference[key]) for key in layer_reference]
    differences = {}
    for name, a, b in pairs:
        a, b = a.float(), b.float()
        tolerance = ATOL * b.abs().max().item() if 'mask' in name else ATOL
        differences[name] = ((a - b).abs().max().item(), tolerance)
    return differences


def describe_device(device: torch.device, threads: int) -> str:
    return f'{device.type}, {threads} threads' if device.type == 'cpu' else torch.cuda.get_device_name(device)


def format_row(label: str, values: List[str], ratio: str = '') -> str:
    return f'{label:<34}' + ''.join(f'{v:>14}' for v in values) + f'{ratio:>12}'


def report_training(runs: List[Formulation], differences: Dict[str, Dict[str, tuple]]) -> None:
    """Training step time and peak memory of every formulation, and their ratios to the reference's
    (speed-up: reference time / time; memory: peak / reference peak); the largest loss and gradient differences
    of the others from the reference (`training_differences`)."""
    print(format_row('', [run.name for run in runs]))
    train_min = [min(run.train_times) for run in runs]
    print(format_row('train step ms (min)', [f'{1e3 * v:,.0f}' for v in train_min]))
    print(format_row('train step peak memory increase MB', [f'{run.train_memory / 2 ** 20:,.0f}' for run in runs]))
    reference = next((run for run in runs if run.name == 'reference'), None)
    if reference is not None:
        print(format_row('train step speed-up vs reference',
                         [f'{min(reference.train_times) / v:.2f}x' for v in train_min]))
        print(format_row('train step memory vs reference',
                         [f'{run.train_memory / reference.train_memory:.2f}x' for run in runs]))
    for name, compared in differences.items():
        for kind, (where, difference, tolerance) in compared.items():
            verdict = 'within' if difference <= tolerance else 'OUTSIDE'
            print(f'{name} vs reference, largest {kind} difference: {difference:.2e} in {where} '
                  f'({verdict} the tolerance {tolerance:.2e})')


def report(runs: List[Formulation], args, differences: Optional[Dict[str, tuple]],
           train_differences: Dict[str, Dict[str, tuple]], loads: tuple) -> None:
    device = torch.device(args.device)
    where = describe_device(device, args.threads)
    precision = 'bfloat16 autocast' if args.amp and device.type == 'cuda' else 'float32'
    print(f'\nBIFIT {args.backbone}, {args.frames} frames {args.height}x{args.width}, one clip, {where}, {precision}; '
          f'load average {loads[0]:.2f} before, {loads[1]:.2f} after')
    def speedup(values: List[float]) -> str:
        """The reference's time over the fast formulation's, whatever the order of `--formulations`."""
        times = dict(zip([run.name for run in forward_runs], values))
        return f"{times['reference'] / times['fast']:.2f}x" if times.keys() == {'fast', 'reference'} else ''

    forward_runs = [run for run in runs if run.forward_times]
    print(format_row('', [run.name for run in forward_runs], 'speed-up' if len(forward_runs) == 2 else ''))
    forward_min = [min(run.forward_times) for run in forward_runs]
    forward_median = [statistics.median(run.forward_times) for run in forward_runs]
    print(format_row('forward ms/clip (min)', [f'{1e3 * v:,.0f}' for v in forward_min], speedup(forward_min)))
    print(format_row('forward ms/clip (median)', [f'{1e3 * v:,.0f}' for v in forward_median], speedup(forward_median)))
    print(format_row('forward frames/s', [f'{args.frames / v:.2f}' for v in forward_min]))
    print(format_row('forward peak memory increase MB',
                     [f'{run.forward_memory / 2 ** 20:,.0f}' for run in forward_runs]))
    if not args.skip_training:
        report_training(runs, train_differences)
    if differences is not None:
        worst = max(differences, key=lambda k: differences[k][0] / differences[k][1])
        verdict = 'agree' if all(d <= t for d, t in differences.values()) else 'DISAGREE'
        print(f'outputs {verdict}: largest difference relative to its tolerance in {worst}: '
              f'{differences[worst][0]:.2e} (tolerance {differences[worst][1]:.2e})')
        for name in ('pred_logits', 'pred_boxes', 'pred_masks', 'reference_points'):
            if name in differences:
                difference, tolerance = differences[name]
                print(f'  {name:<18} max |fast - reference| {difference:.2e} (tolerance {tolerance:.2e})')


def synthetic_ytvos(out: Path, args) -> Path:
    """A synthetic Ref-YouTube-VOS set under `out` (`--dataset_videos` validation videos of `--frames` frames
    at `--height` x `--width`, `--dataset_expressions` expressions each): its root."""
    flags = ['--out', str(out), '--benchmarks', 'ytvos', '--videos', str(args.dataset_videos), '--frames',
             str(args.frames), '--height', str(args.height), '--width', str(args.width), '--ytvos_expressions',
             str(args.dataset_expressions), '--seed', str(args.benchmark_seed)]
    options = make_synthetic_data.get_parser().parse_args(flags)
    make_synthetic_data.make(out, options.benchmarks, options)
    return out / 'ref-youtube-vos'


def dataset_inference(model: nn.Module, args) -> bool:
    """Expressions per hour of inference_ytvos.py's work (frames read, masks chosen and written) on a synthetic
    Ref-YouTube-VOS set, each clip's visual part computed once for all the expressions of a video (`encode
    once`) against the whole network run per expression (`per expression`, the straightforward loop); the two
    alternate video by video after a warm-up pass (one expression), and must write identical PNGs (False when
    they do not)."""
    device = torch.device(args.device)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic_ytvos(Path(tmp) / 'data', args)
        meta, test = (read_json(root / 'meta_expressions' / split / 'meta_expressions.json', 'meta file')['videos']
                      for split in ('valid', 'test'))
        videos = [[Expression(video, exp_id, e['exp'], meta[video]['frames'])
                   for exp_id, e in meta[video]['expressions'].items()] for video in sorted(set(meta) - set(test))]
        frames_root = root / 'valid' / 'JPEGImages'
        ways = {'encode once': lambda run_args, expressions: segment_video_expressions(
                    model, device, run_args, expressions, frames_root),
                'per expression': lambda run_args, expressions: [segment_video_expressions(
                    model, device, run_args, [expression], frames_root) for expression in expressions]}
        outputs = {name: Path(tmp) / name.replace(' ', '_') for name in ways}
        seconds = dict.fromkeys(ways, 0.0)
        warm_up = copy.copy(args)
        warm_up.output_dir, warm_up.split, warm_up.visualize = str(Path(tmp) / 'warm_up'), 'valid', False
        ways['encode once'](warm_up, videos[0][:1])
        for index, expressions in enumerate(videos):
            for name in (list(ways) if index % 2 == 0 else list(ways)[::-1]):
                run_args = copy.copy(args)
                run_args.output_dir, run_args.split, run_args.visualize = str(outputs[name]), 'valid', False
                seconds[name] += timed(lambda: ways[name](run_args, expressions), device)
        once, each = (outputs[name] / 'valid' for name in ways)
        files = {name: sorted(p.relative_to(folder) for p in folder.rglob('*.png'))
                 for name, folder in zip(ways, (once, each))}
        identical = files['encode once'] == files['per expression'] and all(
            (once / path).read_bytes() == (each / path).read_bytes() for path in files['encode once'])
    loads.append(os.getloadavg()[0])
    expressions = sum(len(v) for v in videos)
    where = describe_device(device, args.threads)
    print(f'\nDataset inference, BIFIT {args.backbone}: synthetic Ref-YouTube-VOS, {len(videos)} videos x '
          f'{args.dataset_expressions} expressions, {args.frames} frames {args.height}x{args.width}, '
          f'--clip_len {args.clip_len}, {where}; load average {loads[0]:.2f} before, {loads[1]:.2f} after')
    per_hour = [3600 * expressions / seconds[name] for name in ('per expression', 'encode once')]
    print(format_row('', ['per expression', 'encode once'], 'speed-up'))
    print(format_row('expressions/hour', [f'{v:,.0f}' for v in per_hour], f'{per_hour[1] / per_hour[0]:.2f}x'))
    print(format_row('seconds/expression', [f'{seconds[n] / expressions:.1f}'
                                            for n in ('per expression', 'encode once')]))
    print(f'masks {"identical" if identical else "DIFFER"}: {len(files["encode once"])} and '
          f'{len(files["per expression"])} PNGs')
    return identical


def main(argv=None) -> int:
    args = get_benchmark_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    loads = [os.getloadavg()[0]]
    try:
        model, criterion = build(args)
    except TextEncoderUnavailable:
        raise SystemExit(f'--text_encoder {args.text_encoder}: not a local RoBERTa directory, and it cannot be '
                         'downloaded here; pass --text_encoder DIR, e.g. a stand-in of its size written by '
                         'python tools/make_tiny_text_encoder.py --out DIR --roberta_base_sized --no_weights') from None
    masks_identical = 'dataset' not in args.sections or dataset_inference(model, args)
    if 'clip' not in args.sections:
        return 0 if masks_identical else 1
    video, target = synthetic_clip(args)
    runs = [Formulation(name, model, criterion, video, target, args) for name in args.formulations]
    forward_runs = [run for run in runs if run.name != 'checkpointed']

    first_outputs = {run.name: run.first_forward() for run in forward_runs}
    differences = None
    if {'fast', 'reference'} <= set(first_outputs):
        differences = output_differences(first_outputs['fast'], first_outputs['reference'])
    del first_outputs
    for _ in range(args.repeats):
        for run in forward_runs:
            run.forward_times.append(timed(run.forward, run.device))
    train_differences = {}
    if not args.skip_training:
        for run in runs:
            run.measure_train_memory()
        reference = next((run for run in runs if run.name == 'reference'), None)
        if reference is not None and not args.keep_dropout:
            train_differences = {run.name: training_differences(run, reference) for run in runs if run is not reference}
        for run in runs:
            run.gradients = {}
        for _ in range(args.train_repeats):
            for run in runs:
                run.train_times.append(timed(run.train_step, run.device))
    loads.append(os.getloadavg()[0])
    report(runs, args, differences, train_differences, tuple(loads))
    if differences is not None and not all(d <= t for d, t in differences.values()):
        return 1
    if not all(d <= t for compared in train_differences.values() for _, d, t in compared.values()):
        return 1
    return 0 if masks_identical else 1


if __name__ == '__main__':
    cli.run(main, list)

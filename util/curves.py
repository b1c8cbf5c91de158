"""Training curves as TensorBoard event files beside `log.txt` (`tensorboard --logdir OUTPUT_DIR`)."""
from typing import Dict, Sequence

# The AdamW parameter groups of training, in their order (main.parameter_groups): the curves of their
# learning rates are named after them.
PARAMETER_GROUPS = ('other', 'backbone', 'text_encoder', 'text_fusion', 'linear_proj')


class TrainingCurves:
    """Scalars of every optimisation step (`train/...`, `lr/<group>`) and of every epoch (`epoch/train_...`,
    `eval/...`: the values `log.txt` holds), written by the main process into `log_dir`."""

    def __init__(self, log_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter  # imported only when curves are written
        except ImportError as error:
            raise SystemExit(f'TensorBoard curves need the tensorboard package ({error}): '
                             'pip install -r requirements.txt, or pass --no_tensorboard') from error
        self.writer = SummaryWriter(log_dir=log_dir)

    def add_step(self, step: int, values: Dict[str, float], learning_rates: Sequence[float]) -> None:
        """One optimisation step: loss terms and gradient norm (`values`), and each group's learning rate."""
        for name, value in values.items():
            self.writer.add_scalar(f'train/{name}', value, step)
        for name, lr in zip(PARAMETER_GROUPS, learning_rates):
            self.writer.add_scalar(f'lr/{name}', lr, step)

    def add_epoch(self, epoch: int, stats: Dict[str, float]) -> None:
        """One epoch's line of `log.txt`: the training averages and the evaluation metrics."""
        for name, value in stats.items():
            if name in ('epoch', 'n_parameters') or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(f'epoch/{name}' if name.startswith('train_') else f'eval/{name}', value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

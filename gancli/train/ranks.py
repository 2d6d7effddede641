"""What several processes mean for a run, decided once, printed at start and documented in the
README ("Several processes, GPUs and machines"):

- `batch_size` is per process: each optimiser step sees batch_size x processes images;
- a step is one optimiser update of D and of G (the same count on every process);
- each process draws its own noise (its own seeded stream) and its own slice of every epoch;
- only the main process writes files and shows progress;
- learning rates are not scaled with the number of processes: the recipe's apply as given.
"""

from __future__ import annotations

from accelerate import Accelerator
from torch import nn

from gancli.errors import GancliError
from gancli.recipes import TrainConfig


def semantics(t: TrainConfig, accelerator: Accelerator) -> str | None:
    """The one line a multi-process run prints at start (None for one process)."""
    n = accelerator.num_processes
    if n == 1:
        return None
    return (f"processes: {n} ({accelerator.distributed_type.value}); batch {t.batch_size} per "
            f"process, {t.batch_size * n} per step; each process draws its own noise and its own "
            f"slice of the data; learning rates as given (not scaled by {n}); "
            f"only the main process writes")


def check_sync_bn(t: TrainConfig, accelerator: Accelerator) -> None:
    if t.sync_bn and accelerator.device.type != "cuda":
        raise GancliError("--sync-bn needs CUDA GPUs (SyncBatchNorm has no CPU kernel); leave it "
                          "off on the CPU, where each process keeps its own BatchNorm statistics")


def sync_batchnorm(t: TrainConfig, *nets: nn.Module) -> tuple[nn.Module, ...]:
    """With --sync-bn, every BatchNorm becomes SyncBatchNorm: statistics over the whole step's
    batch rather than each GPU's slice. State-dict keys are unchanged, so checkpoints load into
    plain BatchNorm (one process, the CPU) and back."""
    if not t.sync_bn:
        return nets
    return tuple(nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in nets)

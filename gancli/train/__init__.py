"""Training: one loop for every model family, and what keeps a long run safe.

- `loop`: the loop itself (`train`), the story of a step on Accelerate;
- `run`: run directories, exact resume, checkpoints with every process's random state;
- `guard`: stopping on signals and on non-finite figures, agreed by every process;
- `rng`: every random stream a process draws from, captured and restored;
- `ema`, `progress`: the generator's moving average; the progress bar and log windows.
"""

from gancli.train.ema import EMA
from gancli.train.loop import train
from gancli.train.run import RESUME_OVERRIDES, new_run_dir, resume_config, total_steps

__all__ = ["EMA", "RESUME_OVERRIDES", "new_run_dir", "resume_config", "total_steps", "train"]

"""One seed for every source of randomness a stage may draw from.

Each stage is seeded right before it runs, so its output depends on its inputs and config only:
not on which stages ran earlier in the same process (a model head initialised from the global
torch generator would otherwise differ between a full run, `--only` and a worker process).
"""

from __future__ import annotations

import random


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device's generator, CUDA included

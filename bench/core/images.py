"""Images between numpy's HWC float arrays (how data sources hold them) and torch's NCHW batches."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_tensor(img: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """An (H, W, C) array as a (1, C, H, W) tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(device)

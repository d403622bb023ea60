"""Dropout with cheaper random masks on CPU, for the encoder's LoRA training and the surrogate.

The same inverted dropout as ``nn.Dropout``: in training each element is kept with probability
1 - p and the kept ones are scaled by 1 / (1 - p); in evaluation it is the identity. Only the
mask is drawn differently. On CPU torch draws ``nn.Dropout``'s Bernoulli masks one element at
a time (about 6.5 ns an element here). A LoRA step of a polyBERT-size encoder draws about 70
million of them (polyBERT's own dropout on hidden states and attention weights, and LoRA's on
each adapter's input), a third of the step's time; the surrogate's network, a quarter of its
step (benchmarks/RESULTS.md). Here each mask is a fresh stream of numpy's SFC64 generator,
seeded from torch's default generator (so ``torch.manual_seed`` and a saved RNG state
reproduce it), and one 64-bit draw of it gives four 16-bit lanes, each a uniform integer
compared against p. A dropout's forward and backward pass costs about a third of torch's
(benchmarks/RESULTS.md). The keep probability is quantised to 1/65536 (for p = 0.1 the drop
probability is 0.100006). On other devices torch's own masks are fast and are used.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

LANE_VALUES = 2**16  # one 16-bit lane takes this many values
LANES_PER_DRAW = 4  # 16-bit lanes in one 64-bit draw
SEED_HIGH = 2**63 - 1  # a mask's stream is seeded from [0, SEED_HIGH) drawn by torch
NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64}


def _keep(count: int, p: float) -> np.ndarray:
    """``count`` booleans, each True with probability 1 - p (to 1/65536), independently."""
    seed = int(torch.randint(0, SEED_HIGH, (), dtype=torch.int64))
    draws = np.random.SFC64(seed).random_raw(-(-count // LANES_PER_DRAW))
    lanes = draws.view(np.int16)[:count]
    # A signed lane is uniform over [-32768, 32767]; dropping the lowest round(p * 65536)
    # values drops with probability p. (numpy compares int16 several times faster than torch.)
    return lanes >= round(p * LANE_VALUES) - LANE_VALUES // 2


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A boolean mask of ``shape``, each element True with probability 1 - p (to 1/65536),
    independently, its stream seeded from torch's default CPU generator."""
    return torch.from_numpy(_keep(shape.numel(), p)).view(shape)


@functools.cache
def _one_bits(dtype: torch.dtype) -> np.int16:
    """The bit pattern of 1.0 in a 16-bit float dtype (bf16 0x3F80, fp16 0x3C00)."""
    return np.int16(torch.ones((), dtype=dtype).view(torch.int16).item())


class LaneDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training masks come from :func:`keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not self.training
            or self.p == 0
            or self.p >= 1
            or x.device.type != "cpu"
            or not x.dtype.is_floating_point
        ):
            return super().forward(x)
        scale = 1.0 / (1.0 - self.p)
        keep = _keep(x.numel(), self.p)
        if x.dtype in NUMPY_FLOATS:
            # The scaled mask, made by numpy from the booleans: forward and backward are then
            # one product each.
            numpy_float = NUMPY_FLOATS[x.dtype]
            scaled = torch.from_numpy(keep * numpy_float(scale)).view(x.shape)
            return x.mul_(scaled) if self.inplace else x * scaled
        # In bf16 or fp16 a scaled mask would round the scale itself (1/0.9 to 1.109 in bf16,
        # as torch's own CPU dropout does); scaling x rounds each product once instead, and
        # the 0/1 mask (1.0's bit pattern where kept) multiplies exactly.
        ones = np.multiply(keep, _one_bits(x.dtype), dtype=np.int16)
        mask = torch.from_numpy(ones).view(x.dtype).view(x.shape)
        return x.mul_(scale).mul_(mask) if self.inplace else (x * scale).mul_(mask)


def use_lane_dropout(model: nn.Module) -> int:
    """Replace every ``nn.Dropout`` inside ``model`` by a :class:`LaneDropout` of the same p;
    returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, LaneDropout(child.p, child.inplace))
                replaced += 1
    return replaced

"""Dropout with cheaper random masks on CPU, for the encoder's LoRA training and the surrogate.

The same inverted dropout as ``nn.Dropout``: in training each element is kept with probability
1 - p and the kept ones are scaled by 1 / (1 - p); in evaluation it is the identity. Only the
mask is drawn differently. On CPU torch draws ``nn.Dropout``'s Bernoulli masks one element at
a time (about 6.5 ns an element here). A LoRA step of a polyBERT-size encoder draws about 70
million of them (polyBERT's own dropout on hidden states and attention weights, and LoRA's on
each adapter's input), a third of the step's time; the surrogate's network, a quarter of its
step (benchmarks/RESULTS.md). Here one 64-bit draw of torch's generator gives four 16-bit
lanes, each a uniform integer compared against p: a dropout's forward and backward pass costs
a third to a half of torch's in fp32, and about 0.6 of it in bf16. The keep probability is
quantised to 1/65536 (for p = 0.1 the drop probability is 0.100006). On other devices torch's
own masks are fast and are used.
"""

from __future__ import annotations

import torch
from torch import nn

LANE_VALUES = 2**16  # one 16-bit lane takes this many values
LANES_PER_DRAW = 4  # 16-bit lanes in one 64-bit draw
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A boolean mask of ``shape``, each element True with probability 1 - p (to 1/65536),
    independently, drawn from torch's default CPU generator (so ``torch.manual_seed`` and a
    saved RNG state reproduce it)."""
    count = shape.numel()
    draws = torch.empty(-(-count // LANES_PER_DRAW), dtype=torch.int64)
    # Every bit of the 64 random: random_() without bounds leaves the top bit 0.
    draws.random_(INT64_MIN, INT64_MAX)
    lanes = draws.view(torch.int16)[:count].view(shape)
    # A signed lane is uniform over [-32768, 32767]; dropping the lowest round(p * 65536)
    # values drops with probability p.
    return lanes >= round(p * LANE_VALUES) - LANE_VALUES // 2


class LaneDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training masks come from :func:`keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.p >= 1:
            return super().forward(x)
        scale = 1.0 / (1.0 - self.p)
        keep = keep_mask(x.shape, self.p)
        if x.dtype in (torch.float32, torch.float64):
            # The scaled mask: forward and backward are then one product each.
            scaled = keep.to(x.dtype).mul_(scale)
            return x.mul_(scaled) if self.inplace else x * scaled
        # In bf16 or fp16 a scaled mask would round the scale itself (1/0.9 to 1.109 in bf16,
        # as torch's own CPU dropout does); scaling x rounds each product once instead.
        out = torch.where(keep, x * scale, 0)
        return x.copy_(out) if self.inplace else out


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

"""MC dropout as sampled networks (Gal & Ghahramani 2016): draw ``s`` of a prediction is one
network, its dropout masks drawn once and applied to every row.

Drawing a fresh mask per row, as ``nn.Dropout`` does in training mode, would make a row's
prediction depend on the batch it comes in and its place there: the design engine scores
millions of candidates in chunks and ranks them against each other, so one candidate must get
one prediction. Here each dropout layer's mask over its units is drawn from a generator seeded
by the surrogate's seed, the draw and the layer, whatever the rows. Attention-weight dropout
(inside ``nn.MultiheadAttention``) acts per row and has no unit mask; it stays off when
sampling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# Mixes the seed, the draw and the layer into one generator seed (primes, no collisions for
# the few thousand draws and layers a surrogate has).
DRAW_STRIDE = 1_000_003
LAYER_STRIDE = 9_973


class SampledNetworks:
    """Forward hooks that turn each ``nn.Dropout`` of ``model`` (in evaluation mode) into a
    fixed mask per draw."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        self.seed = seed
        self.layers = [m for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
        self.draw = 0
        self._masks: dict[tuple[int, int, int], torch.Tensor] = {}

    def mask(self, layer: int, width: int) -> torch.Tensor:
        """Layer ``layer``'s inverted-dropout mask over ``width`` units in the current draw."""
        key = (self.draw, layer, width)
        if key not in self._masks:
            p = self.layers[layer].p
            generator = torch.Generator().manual_seed(
                self.seed + DRAW_STRIDE * self.draw + LAYER_STRIDE * layer
            )
            keep = torch.bernoulli(torch.full((width,), 1.0 - p), generator=generator)
            self._masks[key] = keep / (1.0 - p)
        return self._masks[key]

    @contextmanager
    def active(self) -> Iterator[SampledNetworks]:
        """Within: every dropout layer multiplies by its mask of :attr:`draw`."""
        handles = []
        for index, layer in enumerate(self.layers):

            def hook(
                module: nn.Module, inputs: object, output: torch.Tensor, index: int = index
            ) -> torch.Tensor:
                mask = self.mask(index, output.shape[-1])
                return output * mask.to(device=output.device, dtype=output.dtype)

            handles.append(layer.register_forward_hook(hook))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

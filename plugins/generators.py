"""Candidate generators: uniform random, scrambled Sobol', Latin hypercube and full grid.

Every generator samples six coordinates per design: one picks the polymer, one the coverage
pattern (a coordinate u in [0, 1) selects choice floor(u * k)), four map onto the continuous
parameters on their linear or log scale. Space-filling sequences (Sobol', LHS) therefore
stratify the discrete choices too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from hydraopt import hookimpl
from hydraopt.domain import CONTINUOUS_FIELDS, DesignBatch, DesignSpace
from hydraopt.plugin_types import GeneratorPlugin, NoSettings, PluginSettings

DIMENSIONS = 2 + len(CONTINUOUS_FIELDS)


def designs_from_unit_samples(space: DesignSpace, samples: np.ndarray) -> DesignBatch:
    """Turn ``[n, 6]`` samples in [0, 1) into designs of ``space``."""
    n_polymers, n_coverages = len(space.polymers), len(space.coverages)
    polymer = np.minimum((samples[:, 0] * n_polymers).astype(np.int64), n_polymers - 1)
    coverage = np.minimum((samples[:, 1] * n_coverages).astype(np.int64), n_coverages - 1)
    return space.designs_from_unit(polymer, coverage, samples[:, 2:])


class RandomGenerator:
    """Independent uniform draws."""

    def __init__(self, settings: NoSettings) -> None:
        self.settings = settings

    def generate(self, space: DesignSpace, n: int, rng: np.random.Generator) -> DesignBatch:
        return designs_from_unit_samples(space, rng.random((n, DIMENSIONS)))


class SobolSettings(PluginSettings):
    scramble: bool = Field(True, description="Owen-scramble the sequence (seeded).")


class SobolGenerator:
    """Sobol' low-discrepancy points (scipy.stats.qmc); draws a power of two and keeps the
    first ``n`` so the sequence's balance holds whenever ``n`` is a power of two."""

    def __init__(self, settings: SobolSettings) -> None:
        self.settings = settings

    def generate(self, space: DesignSpace, n: int, rng: np.random.Generator) -> DesignBatch:
        from scipy.stats import qmc

        sampler = qmc.Sobol(d=DIMENSIONS, scramble=self.settings.scramble, rng=rng)
        exponent = max(0, int(np.ceil(np.log2(max(n, 1)))))
        return designs_from_unit_samples(space, sampler.random_base2(exponent)[:n])


class LatinHypercubeSettings(PluginSettings):
    optimization: Literal["random-cd", "lloyd"] | None = Field(
        None, description="Optional scipy optimisation of the hypercube's discrepancy."
    )


class LatinHypercubeGenerator:
    """Latin hypercube sampling (scipy.stats.qmc): each coordinate's n strata hit once."""

    def __init__(self, settings: LatinHypercubeSettings) -> None:
        self.settings = settings

    def generate(self, space: DesignSpace, n: int, rng: np.random.Generator) -> DesignBatch:
        from scipy.stats import qmc

        sampler = qmc.LatinHypercube(d=DIMENSIONS, optimization=self.settings.optimization, rng=rng)
        return designs_from_unit_samples(space, sampler.random(n))


class GridSettings(PluginSettings):
    stiffness_kpa: int = Field(20, ge=1, description="Levels of stiffness (on its scale).")
    t50_days: int = Field(15, ge=1, description="Levels of degradation half-life.")
    conductivity_s_per_m: int = Field(10, ge=1, description="Levels of conductivity.")
    thickness_mm: int = Field(8, ge=1, description="Levels of patch thickness.")


class GridGenerator:
    """The full factorial grid: every polymer x coverage x evenly spaced levels of each
    continuous parameter (on its scale), as in HYDRA-BERT's Stage 3. Asking for fewer designs
    than the grid holds returns a seeded random subset; asking for more is an error."""

    def __init__(self, settings: GridSettings) -> None:
        self.settings = settings

    def grid_size(self, space: DesignSpace) -> int:
        levels = [getattr(self.settings, name) for name in CONTINUOUS_FIELDS]
        return len(space.polymers) * len(space.coverages) * int(np.prod(levels))

    def generate(self, space: DesignSpace, n: int, rng: np.random.Generator) -> DesignBatch:
        size = self.grid_size(space)
        if n > size:
            raise ValueError(f"the grid holds {size} designs; {n} were asked for")
        rows = np.sort(rng.choice(size, size=n, replace=False)) if n < size else np.arange(size)
        shape = (
            len(space.polymers),
            len(space.coverages),
            *(getattr(self.settings, name) for name in CONTINUOUS_FIELDS),
        )
        index = np.unravel_index(rows, shape)
        # A single level sits mid-range; k levels span the bounds end to end.
        unit = np.stack(
            [
                level / (k - 1) if k > 1 else np.full(n, 0.5)
                for level, k in zip(index[2:], shape[2:], strict=True)
            ],
            axis=1,
        )
        return space.designs_from_unit(index[0], index[1], unit)


@hookimpl
def hydraopt_generators() -> Iterator[GeneratorPlugin]:
    yield GeneratorPlugin(
        name="random",
        factory=RandomGenerator,
        settings=NoSettings,
        description="independent uniform draws over the design space",
    )
    yield GeneratorPlugin(
        name="sobol",
        factory=SobolGenerator,
        settings=SobolSettings,
        description="scrambled Sobol' low-discrepancy sequence over the design space",
    )
    yield GeneratorPlugin(
        name="latin-hypercube",
        factory=LatinHypercubeGenerator,
        settings=LatinHypercubeSettings,
        description="Latin hypercube sample of the design space",
    )
    yield GeneratorPlugin(
        name="grid",
        factory=GridGenerator,
        settings=GridSettings,
        description="full factorial grid (polymers x coverages x parameter levels)",
    )

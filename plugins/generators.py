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
from hydraopt.plugin_types import GeneratorPlugin, PluginSettings

DIMENSIONS = 2 + len(CONTINUOUS_FIELDS)


class GeneratorSettings(PluginSettings):
    within_polymer_ranges: bool = Field(
        True,
        description="Draw stiffness, half-life and conductivity inside each design's polymer's "
        "achievable ranges (polymers whose ranges miss the design space are never drawn); "
        "false samples the whole design space, and simulators flag what cannot be made.",
    )


def makeable_polymers(
    space: DesignSpace, within_polymer_ranges: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices of the polymers to draw from and, when designs stay within their polymer's
    ranges, each polymer's unit-cube bounds (see DesignSpace.polymer_unit_bounds)."""
    polymers = np.arange(len(space.polymers))
    if not within_polymer_ranges:
        return polymers, None
    bounds = space.polymer_unit_bounds()
    makeable = np.all(bounds[:, :, 0] <= bounds[:, :, 1], axis=1)
    if not makeable.any():
        raise ValueError("no polymer's achievable ranges overlap the design space")
    return polymers[makeable], bounds


def place_designs(
    space: DesignSpace,
    polymer: np.ndarray,
    coverage_choice: np.ndarray,
    unit: np.ndarray,
    bounds: np.ndarray | None,
) -> DesignBatch:
    """Designs from choices and unit coordinates, squeezed into polymer bounds if given."""
    if bounds is not None:
        low, high = bounds[polymer, :, 0], bounds[polymer, :, 1]
        unit = low + unit * (high - low)
    return space.designs_from_unit(polymer, coverage_choice, unit)


def designs_from_unit_samples(
    space: DesignSpace, samples: np.ndarray, within_polymer_ranges: bool
) -> DesignBatch:
    """Turn ``[n, 6]`` samples in [0, 1) into designs of ``space``."""
    polymers, bounds = makeable_polymers(space, within_polymer_ranges)
    polymer = polymers[
        np.minimum((samples[:, 0] * len(polymers)).astype(np.int64), len(polymers) - 1)
    ]
    n_coverages = len(space.coverages)
    coverage = np.minimum((samples[:, 1] * n_coverages).astype(np.int64), n_coverages - 1)
    return place_designs(space, polymer, coverage, samples[:, 2:], bounds)


class RandomGenerator:
    """Independent uniform draws."""

    def __init__(self, settings: GeneratorSettings) -> None:
        self.settings = settings

    def generate(self, space: DesignSpace, n: int, rng: np.random.Generator) -> DesignBatch:
        return designs_from_unit_samples(
            space, rng.random((n, DIMENSIONS)), self.settings.within_polymer_ranges
        )


class SobolSettings(GeneratorSettings):
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
        return designs_from_unit_samples(
            space, sampler.random_base2(exponent)[:n], self.settings.within_polymer_ranges
        )


class LatinHypercubeSettings(GeneratorSettings):
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
        return designs_from_unit_samples(
            space, sampler.random(n), self.settings.within_polymer_ranges
        )


class GridSettings(GeneratorSettings):
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

    def generate(self, space: DesignSpace, n: int, rng: np.random.Generator) -> DesignBatch:
        polymers, bounds = makeable_polymers(space, self.settings.within_polymer_ranges)
        shape = (
            len(polymers),
            len(space.coverages),
            *(getattr(self.settings, name) for name in CONTINUOUS_FIELDS),
        )
        size = int(np.prod(shape))
        if n > size:
            raise ValueError(f"the grid holds {size} designs; {n} were asked for")
        rows = np.sort(rng.choice(size, size=n, replace=False)) if n < size else np.arange(size)
        return grid_designs(space, polymers, bounds, shape, rows)


def grid_designs(
    space: DesignSpace,
    polymers: np.ndarray,
    bounds: np.ndarray | None,
    shape: tuple[int, ...],
    rows: np.ndarray,
) -> DesignBatch:
    """The designs at flat positions ``rows`` of the factorial grid ``shape`` (polymers x
    coverages x levels of each continuous parameter)."""
    index = np.unravel_index(rows, shape)
    # A single level sits mid-range; k levels span the bounds end to end.
    unit = np.stack(
        [
            level / (k - 1) if k > 1 else np.full(len(rows), 0.5)
            for level, k in zip(index[2:], shape[2:], strict=True)
        ],
        axis=1,
    )
    return place_designs(space, polymers[index[0]], index[1], unit, bounds)


class GridLatinHypercubeGenerator:
    """HYDRA-BERT's Stage 3 candidates (seeds/000 section 8.1): the full factorial grid, then
    Latin hypercube samples between its points up to ``n``.

    The grid comes first, point by point, for as much of it as ``n`` holds (a seeded random
    subset when ``n`` is smaller). The rest are Latin hypercube samples between the grid's
    points, drawn chunk by chunk: each chunk stratifies all six coordinates (polymer,
    coverage and the four parameters, each on its scale, within each polymer's ranges when
    ``within_polymer_ranges``).
    :meth:`stream` yields the candidates in chunks, so ten million need never be held at once.
    """

    def __init__(self, settings: GridSettings) -> None:
        self.settings = settings

    def generate(self, space: DesignSpace, n: int, rng: np.random.Generator) -> DesignBatch:
        return DesignBatch.concat(list(self.stream(space, n, max(n, 1), rng)))

    def stream(
        self, space: DesignSpace, n: int, chunk_size: int, rng: np.random.Generator
    ) -> Iterator[DesignBatch]:
        """``n`` candidates in chunks of at most ``chunk_size``."""
        polymers, bounds = makeable_polymers(space, self.settings.within_polymer_ranges)
        shape = (
            len(polymers),
            len(space.coverages),
            *(getattr(self.settings, name) for name in CONTINUOUS_FIELDS),
        )
        size = int(np.prod(shape))
        from_grid = min(n, size)
        rows = np.arange(size) if from_grid == size else np.sort(rng.choice(size, from_grid, False))
        for start in range(0, from_grid, chunk_size):
            yield grid_designs(space, polymers, bounds, shape, rows[start : start + chunk_size])
        for start in range(from_grid, n, chunk_size):
            count = min(chunk_size, n - start)
            samples = latin_hypercube(count, DIMENSIONS, rng)
            # The levels are evenly spaced on each parameter's scale, so a point between two
            # of them, interpolated on that scale, is the stratified coordinate itself.
            unit = samples[:, 2:]
            polymer = polymers[
                np.minimum((samples[:, 0] * len(polymers)).astype(np.int64), len(polymers) - 1)
            ]
            coverage = np.minimum(
                (samples[:, 1] * len(space.coverages)).astype(np.int64), len(space.coverages) - 1
            )
            yield place_designs(space, polymer, coverage, unit, bounds)


def latin_hypercube(n: int, dimensions: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, dimensions]`` in [0, 1): each coordinate's ``n`` equal strata hit once, in an
    independent random order per coordinate (McKay et al. 1979)."""
    strata = rng.permuted(np.broadcast_to(np.arange(n), (dimensions, n)), axis=1).T
    return (strata + rng.random((n, dimensions))) / n


class PolicySettings(PluginSettings):
    spread: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="Standard deviation of the samples around each proposal, in unit-cube "
        "coordinates of each continuous parameter (on its scale).",
    )


class PolicyGenerator:
    """Samples around the designs the Stage 2 policy proposed for the patient: each candidate
    takes a proposal (in turn, best first), keeps its polymer and coverage, and moves its
    continuous parameters by a Gaussian step of ``spread`` in unit coordinates, reflected back
    inside its polymer's ranges (or the design space). Bound to a patient's proposals with
    :meth:`around` before it generates."""

    def __init__(self, settings: PolicySettings, proposals: DesignBatch | None = None) -> None:
        self.settings = settings
        self.proposals = proposals

    def around(self, proposals: DesignBatch) -> PolicyGenerator:
        """This generator, sampling around ``proposals``."""
        if not len(proposals):
            raise ValueError("the policy proposed no designs to sample around")
        return PolicyGenerator(self.settings, proposals)

    def generate(self, space: DesignSpace, n: int, rng: np.random.Generator) -> DesignBatch:
        if self.proposals is None:
            raise ValueError(
                "the 'policy' generator samples around the policy's proposals: it needs the "
                "policy stage ([policy] in pipeline.toml)"
            )
        take = np.arange(n) % len(self.proposals)
        base = self.proposals.take(take)
        unit = base.unit_coordinates() + rng.normal(0.0, self.settings.spread, (n, 4))
        bounds = space.polymer_unit_bounds()[base.polymer_index]
        low, high = np.maximum(0.0, bounds[:, :, 0]), np.minimum(1.0, bounds[:, :, 1])
        unit = _reflect(unit, low, high)
        return space.designs_from_unit(base.polymer_index, base.coverage_index, unit)


def _reflect(unit: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``unit`` folded back into ``[low, high]`` (a step past a bound comes back from it)."""
    span = np.maximum(high - low, 1e-12)
    period = (unit - low) % (2 * span)
    return low + np.where(period > span, 2 * span - period, period)


@hookimpl
def hydraopt_generators() -> Iterator[GeneratorPlugin]:
    yield GeneratorPlugin(
        name="random",
        factory=RandomGenerator,
        settings=GeneratorSettings,
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
    yield GeneratorPlugin(
        name="grid-lhs",
        factory=GridLatinHypercubeGenerator,
        settings=GridSettings,
        description="the factorial grid, then Latin hypercube samples between its points "
        "(HYDRA-BERT's Stage 3), streamed in chunks",
    )
    yield GeneratorPlugin(
        name="policy",
        factory=PolicyGenerator,
        settings=PolicySettings,
        description="samples around the Stage 2 policy's proposals for the patient",
    )

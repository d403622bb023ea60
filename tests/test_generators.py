import numpy as np
import pytest

from hydraopt.registry import PluginRegistry
from hydraopt.testing import check_generator, example_space


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


def build(registry, name, **settings):
    return registry.create(
        "generator", name, registry.validate_settings("generator", name, settings)
    )


@pytest.mark.parametrize("name", ["random", "sobol", "latin-hypercube", "grid"])
def test_generators_conform(registry, name):
    check_generator(build(registry, name), example_space(), n=64)


@pytest.mark.parametrize("name", ["random", "sobol", "latin-hypercube"])
def test_seeds_give_different_designs(registry, name):
    generator = build(registry, name)
    a = generator.generate(example_space(), 32, np.random.default_rng(1))
    b = generator.generate(example_space(), 32, np.random.default_rng(2))
    assert not np.array_equal(a.stiffness_kpa, b.stiffness_kpa)


def test_sobol_stratifies_the_discrete_choices(registry):
    batch = build(registry, "sobol").generate(example_space(), 256, np.random.default_rng(0))
    assert np.bincount(batch.polymer_index).tolist() == [128, 128]
    assert np.bincount(batch.coverage_index).tolist() == [64, 64, 64, 64]


def test_latin_hypercube_hits_every_stratum(registry):
    batch = build(registry, "latin-hypercube", within_polymer_ranges=False).generate(
        example_space(), 50, np.random.default_rng(0)
    )
    strata = np.floor(batch.unit_coordinates() * 50).astype(int)
    for column in strata.T:
        assert sorted(column.tolist()) == list(range(50))


def test_log_parameters_are_sampled_on_their_scale(registry):
    batch = build(registry, "random").generate(example_space(), 20_000, np.random.default_rng(0))
    # Log-uniform over 0.5-50 kPa: half the designs lie below the geometric mean, 5 kPa.
    assert np.mean(batch.stiffness_kpa < 5.0) == pytest.approx(0.5, abs=0.02)
    assert np.mean(batch.thickness_mm < 1.05) == pytest.approx(0.5, abs=0.02)


def test_full_grid_covers_every_level(registry):
    generator = build(
        registry,
        "grid",
        within_polymer_ranges=False,
        stiffness_kpa=3,
        t50_days=2,
        conductivity_s_per_m=2,
        thickness_mm=2,
    )
    space = example_space()
    size = 2 * 4 * 3 * 2 * 2 * 2
    batch = generator.generate(space, size, np.random.default_rng(0))
    np.testing.assert_allclose(sorted(set(batch.stiffness_kpa.round(6))), [0.5, 5.0, 50.0])
    rows = {tuple(np.round(r, 9)) for r in np.column_stack(list(batch.columns().values()))}
    assert len(rows) == size
    assert len(generator.generate(space, 10, np.random.default_rng(0))) == 10
    with pytest.raises(ValueError, match=f"the grid holds {size} designs"):
        generator.generate(space, size + 1, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["random", "sobol", "latin-hypercube", "grid"])
def test_designs_stay_within_their_polymers_ranges(registry, name):
    from dataclasses import replace

    from hydraopt.domain import PolymerLibrary, PropertyRange

    space = example_space()
    unreachable = replace(
        space.polymers[0], name="too-soft", stiffness_kpa=PropertyRange(0.01, 0.2)
    )
    space = replace(space, polymers=PolymerLibrary((*space.polymers, unreachable)))
    batch = build(registry, name).generate(space, 300, np.random.default_rng(3))
    assert 2 not in batch.polymer_index  # its stiffness range misses the design space
    assert set(batch.polymer_index.tolist()) == {0, 1}
    for name_, mask in batch.outside_polymer_range().items():
        assert not mask.any(), name_


# --- grid-lhs: the full grid first, then Latin hypercube samples, streamed ---------------------

SMALL_GRID = {"stiffness_kpa": 3, "t50_days": 2, "conductivity_s_per_m": 2, "thickness_mm": 2}
SMALL_GRID_SIZE = 2 * 4 * 3 * 2 * 2 * 2  # polymers x coverages x levels


def grid_lhs_chunks(registry, n, chunk_size, seed=0, space=None, **settings):
    generator = build(registry, "grid-lhs", **{**SMALL_GRID, **settings})
    space = space or example_space()
    return list(generator.stream(space, n, chunk_size, np.random.default_rng(seed)))


def test_grid_lhs_yields_the_whole_grid_first_then_latin_hypercube_samples(registry):
    from hydraopt.domain import DesignBatch

    n, chunk_size = 300, 40
    chunks = grid_lhs_chunks(registry, n, chunk_size, within_polymer_ranges=False)
    assert all(1 <= len(c) <= chunk_size for c in chunks)
    batch = DesignBatch.concat(chunks)
    assert len(batch) == n
    grid = batch.take(np.arange(SMALL_GRID_SIZE))
    rows = {tuple(np.round(r, 9)) for r in np.column_stack(list(grid.columns().values()))}
    assert len(rows) == SMALL_GRID_SIZE  # every grid point once
    # Every level of every parameter, on its scale, end to end.
    np.testing.assert_allclose(sorted(set(grid.stiffness_kpa.round(6))), [0.5, 5.0, 50.0])
    unit = grid.unit_coordinates()
    for j, levels in enumerate([3, 2, 2, 2]):
        np.testing.assert_allclose(
            np.unique(unit[:, j].round(9)), np.linspace(0, 1, levels), atol=1e-9
        )
    assert set(grid.polymer_index.tolist()) == {0, 1}
    assert set(grid.coverage_index.tolist()) == {0, 1, 2, 3}
    # The rest lie between the grid's points.
    rest = batch.take(np.arange(SMALL_GRID_SIZE, n)).unit_coordinates()
    assert not np.isin(rest.round(9), [0.0, 0.5, 1.0]).all(axis=1).any()


def test_grid_lhs_stratifies_every_coordinate_within_each_chunk(registry):
    chunk_size = 64
    chunks = grid_lhs_chunks(
        registry, SMALL_GRID_SIZE + 2 * chunk_size, chunk_size, within_polymer_ranges=False
    )
    assert [len(c) for c in chunks] == [64, 64, 64, 64, 64]
    sampled = chunks[3:]  # the grid's 192 points come in three chunks, then the samples
    for chunk in sampled:
        # Each of k equal strata of each continuous coordinate gets chunk_size / k samples.
        unit = chunk.unit_coordinates()
        for k in (64, 8, 2):
            for column in unit.T:
                counts = np.bincount(np.floor(column * k).astype(int), minlength=k)
                assert counts.tolist() == [chunk_size // k] * k
        assert np.bincount(chunk.polymer_index).tolist() == [32, 32]
        assert np.bincount(chunk.coverage_index).tolist() == [16, 16, 16, 16]


def test_grid_lhs_is_a_seeded_subset_of_the_grid_when_n_is_smaller(registry):
    from hydraopt.domain import DesignBatch

    chunks = grid_lhs_chunks(registry, 30, 8, within_polymer_ranges=False)
    assert [len(c) for c in chunks] == [8, 8, 8, 6]
    batch = DesignBatch.concat(chunks)
    assert np.isin(batch.unit_coordinates().round(9), [0.0, 0.5, 1.0]).all()
    rows = {tuple(np.round(r, 9)) for r in np.column_stack(list(batch.columns().values()))}
    assert len(rows) == 30  # distinct grid points
    again = grid_lhs_chunks(registry, 30, 8, within_polymer_ranges=False)
    np.testing.assert_array_equal(DesignBatch.concat(again).stiffness_kpa, batch.stiffness_kpa)


def test_grid_lhs_is_deterministic_for_a_seed(registry):
    first = grid_lhs_chunks(registry, 250, 64, seed=5)
    again = grid_lhs_chunks(registry, 250, 64, seed=5)
    other = grid_lhs_chunks(registry, 250, 64, seed=6)
    for a, b in zip(first, again, strict=True):
        for name, values in a.columns().items():
            np.testing.assert_array_equal(values, b.columns()[name])
    assert not np.array_equal(first[-1].stiffness_kpa, other[-1].stiffness_kpa)


def test_grid_lhs_stays_within_the_polymers_ranges(registry):
    from dataclasses import replace

    from hydraopt.domain import DesignBatch, PolymerLibrary, PropertyRange

    space = example_space()
    unreachable = replace(
        space.polymers[0], name="too-soft", stiffness_kpa=PropertyRange(0.01, 0.2)
    )
    space = replace(space, polymers=PolymerLibrary((*space.polymers, unreachable)))
    batch = DesignBatch.concat(grid_lhs_chunks(registry, 500, 128, space=space))
    assert set(batch.polymer_index.tolist()) == {0, 1}  # never the unmakeable polymer
    for name, mask in batch.outside_polymer_range().items():
        assert not mask.any(), name
    for name, mask in batch.out_of_bounds().items():
        assert not mask.any(), name
    check_generator(build(registry, "grid-lhs"), example_space(), n=64)


# --- policy: samples around the policy's proposals ----------------------------------------------


def proposals_at_centres(space, polymers, coverages):
    """Designs at the centre of each polymer's achievable unit box."""
    bounds = space.polymer_unit_bounds()[np.asarray(polymers)]
    centre = bounds.mean(axis=2)
    coverage_choice = np.searchsorted(space.coverage_indices, coverages)
    return space.designs_from_unit(np.asarray(polymers), coverage_choice, centre)


def test_policy_generator_keeps_each_proposals_polymer_and_coverage(registry):
    space = example_space()
    proposals = proposals_at_centres(space, [1, 0, 1], [3, 0, 2])
    generator = build(registry, "policy").around(proposals)
    batch = generator.generate(space, 30, np.random.default_rng(0))
    assert len(batch) == 30
    np.testing.assert_array_equal(batch.polymer_index, np.tile([1, 0, 1], 10))
    np.testing.assert_array_equal(batch.coverage_index, np.tile([3, 0, 2], 10))
    again = generator.generate(space, 30, np.random.default_rng(0))
    np.testing.assert_array_equal(batch.stiffness_kpa, again.stiffness_kpa)


@pytest.mark.parametrize("spread", [0.01, 0.03])
def test_policy_generator_spreads_by_spread_around_each_proposal(registry, spread):
    space = example_space()
    proposals = proposals_at_centres(space, [0, 1], [0, 1])
    generator = build(registry, "policy", spread=spread).around(proposals)
    batch = generator.generate(space, 4000, np.random.default_rng(1))
    step = batch.unit_coordinates() - proposals.take(np.arange(4000) % 2).unit_coordinates()
    # Far from every bound, so nothing reflected: a Gaussian step of sd `spread` per coordinate.
    np.testing.assert_allclose(step.std(axis=0), spread, rtol=0.1)
    np.testing.assert_allclose(step.mean(axis=0), 0.0, atol=spread / 10)


def test_policy_generator_stays_inside_the_polymers_ranges(registry):
    space = example_space()
    bounds = space.polymer_unit_bounds()
    # Proposals on the edge of their polymer's box, and a wide spread that steps outside.
    proposals = space.designs_from_unit(np.array([0, 1]), np.array([0, 3]), bounds[[0, 1], :, 1])
    batch = (
        build(registry, "policy", spread=1.0)
        .around(proposals)
        .generate(space, 2000, np.random.default_rng(2))
    )
    for name, mask in batch.outside_polymer_range().items():
        assert not mask.any(), name
    for name, mask in batch.out_of_bounds().items():
        assert not mask.any(), name
    # Reflected back in, not clipped onto the bound.
    assert np.mean(np.isclose(batch.unit_coordinates(), bounds[batch.polymer_index, :, 1])) < 0.01


def test_policy_generator_refuses_without_proposals(registry):
    generator = build(registry, "policy")
    with pytest.raises(ValueError, match=r"needs the policy stage \(\[policy\]"):
        generator.generate(example_space(), 4, np.random.default_rng(0))
    empty = example_space().designs_from_unit(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 4)))
    with pytest.raises(ValueError, match="proposed no designs"):
        generator.around(empty)

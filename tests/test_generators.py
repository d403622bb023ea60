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

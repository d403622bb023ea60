"""The injected gel over time: swelling, bulk and surface degradation, dissolution."""

import numpy as np
import pytest

from hydraopt_simulators.hydrogel import (
    BULK_SWELLING_EXPONENT,
    REVERSE_GEL_FRACTION,
    gel_state,
    remaining_mass_fraction,
)


def test_swollen_gel_is_the_injected_thickness_times_the_swelling_ratio(make_designs, library):
    designs = make_designs("pegda-3400", "scar_only", 20.0, 200.0, 0.01, 1.5)
    swelling = library[library.index("pegda-3400")].swelling_ratio
    gel = gel_state(designs, wall_thickness_mm=10.0, weeks=0.0)
    assert gel.thickness_ratio[0] == pytest.approx(swelling * 1.5 / 10.0)
    assert gel.modulus_kpa[0] == pytest.approx(20.0)


def test_bulk_gel_softens_swells_and_dissolves_at_its_reverse_gel_point(make_designs):
    """Rubber elasticity (E ~ m), Flory-Rehner swelling (V ~ m^(2/5)) and reverse gelation
    below a crosslink fraction of 1/3 (Flory 1941; Metters et al. 2000)."""
    designs = make_designs("pegda-pla", "scar_only", 30.0, 14.0, 0.01, 1.0)
    start = gel_state(designs, 10.0, 0.0)
    one_half_life = gel_state(designs, 10.0, 2.0)
    mass = remaining_mass_fraction(14.0, 2.0)
    assert mass == pytest.approx(0.5)
    assert one_half_life.modulus_kpa[0] == pytest.approx(30.0 * 0.5)
    assert one_half_life.thickness_ratio[0] == pytest.approx(
        start.thickness_ratio[0] * 0.5**BULK_SWELLING_EXPONENT
    )
    weeks_to_dissolve = -np.log2(REVERSE_GEL_FRACTION) * 14.0 / 7.0
    just_before = gel_state(designs, 10.0, 0.99 * weeks_to_dissolve)
    after = gel_state(designs, 10.0, 1.01 * weeks_to_dissolve)
    assert just_before.present[0] and not after.present[0]
    assert after.modulus_kpa[0] == 0.0 and after.thickness_ratio[0] == 0.0


def test_surface_eroding_gel_shrinks_at_constant_modulus(make_designs):
    designs = make_designs("meha", "scar_only", 30.0, 70.0, 0.05, 1.0)
    start, later = (gel_state(designs, 10.0, w) for w in (0.0, 10.0))
    assert later.modulus_kpa[0] == pytest.approx(30.0)
    assert later.thickness_ratio[0] == pytest.approx(start.thickness_ratio[0] * 0.5)

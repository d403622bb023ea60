"""The reference electrophysiology: tuned conduction, the fast endocardial layer, scar, the
re-entry vulnerability index and the hydrogel's conductivity (each published effect names its
source and band)."""

from dataclasses import replace

import meshio
import numpy as np
import pytest

from hydraopt.domain.mesh import REGION_SCAR
from hydraopt.testing import check_simulator
from hydraopt_simulators.ep.activation import evaluate_designs, reentry_vulnerability_index
from hydraopt_simulators.ep.purkinje import endocardial_activation_ms, root_nodes
from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings
from hydraopt_simulators.ep.solver import node_mask_of_elements
from hydraopt_simulators.ep.tissue import (
    PHYSICAL_CONDUCTIVITY_S_PER_M,
    bar_velocity_m_per_s,
    interpolated,
    tune,
    tune_conductivity,
    tuning_nodes,
)
from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings


@pytest.fixture(scope="module")
def ep():
    return ReferenceEP(ReferenceEPSettings())


@pytest.fixture(scope="module")
def near_healthy(patient):
    """The example patient with a 2% infarct: conduction through healthy myocardium."""
    return replace(patient, scar_fraction_pct=2.0, bz_fraction_pct=1.0)


@pytest.mark.parametrize("edge_mm", [2.0, 6.0])
def test_healthy_conduction_velocity_is_in_the_published_range(edge_mm):
    """Tuned at any resolution, healthy tissue conducts at 0.5-0.7 m/s along fibres (Kléber &
    Rudy, Physiol Rev 2004;84:431-488)."""
    sigma = tune_conductivity(0.6, edge_mm * 1e-3)
    assert 0.5 <= bar_velocity_m_per_s(sigma, edge_mm * 1e-3) <= 0.7


@pytest.mark.parametrize("target", [0.6, 0.1])
def test_conductivity_between_tuned_nodes_is_as_close_as_tuning_it(target):
    """Interpolated (log sigma, linear in edge length) between the 0.1 mm nodes around it, the
    conductivity at 3.75 mm meets its target within the tuner's own tolerance (1%)."""
    edge = 3.75e-3
    low, high = tuning_nodes(edge)
    assert (low, high) == (3.7e-3, 3.8e-3) and tuning_nodes(3.8e-3) == (3.8e-3, 3.8e-3)
    nodes = [tune(node, {"x": target}) for node in (low, high)]
    sigma = interpolated(edge, *nodes)["x"]
    assert bar_velocity_m_per_s(sigma, edge) == pytest.approx(target, rel=0.01)


def test_untuned_coarse_mesh_would_conduct_too_slowly():
    # Why tuning is needed: the fine mesh's conductivity is too low for a coarse mesh.
    fine = tune_conductivity(0.6, 1e-3)
    assert bar_velocity_m_per_s(fine, 6e-3) < 0.5


def test_too_coarse_a_mesh_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no conductivity gives 0.1 m/s at a 8.4 mm edge length"):
        tune_conductivity(0.1, 8.4e-3)


def test_a_gels_effect_on_conduction_does_not_change_with_the_mesh():
    """Tissue and gel get the same resolution correction, so a gel layer changes conduction by
    the physical mixing rule at any resolution: along fibres, CV ratio sqrt((1 - phi) +
    phi sigma_gel / sigma_tissue) with Clerc's monodomain sigma_tissue. Band: within 10% of the
    continuum value at 6 mm and at 2 mm, and within 6% of each other (with the gel's physical
    conductivity mixed into the tuned tissue's, as before, the ratio was 1.04 and 1.09 against
    a continuum 1.51)."""
    phi, gel = 0.2, 1.0
    physical = PHYSICAL_CONDUCTIVITY_S_PER_M["fibre"]
    expected = np.sqrt((1 - phi) + phi * gel / physical)
    ratios = []
    for edge in (6e-3, 2e-3):
        tuned = tune(edge, {"remote_fibre": 0.6, "remote_cross": 0.3})
        tissue = tuned["remote_fibre"]
        mixed = (1 - phi) * tissue + phi * gel * tuned.correction("fibre")
        ratios.append(bar_velocity_m_per_s(mixed, edge) / bar_velocity_m_per_s(tissue, edge))
    assert ratios[0] == pytest.approx(ratios[1], rel=0.06)
    for ratio in ratios:
        assert ratio == pytest.approx(expected, rel=0.1)


def test_fast_layer_spreads_from_the_earliest_sites(near_healthy, lv_mesh):
    """Durrer et al. 1970: three LV endocardial sites excite first; the layer reaches the rest of
    its extent (apex to 70% of the base, Rodero et al. 2021) at its own velocity, and no node
    above it is stimulated by it."""
    settings = ReferenceEPSettings()
    times = endocardial_activation_ms(
        lv_mesh,
        settings.earliest_activation_aha_segments,
        settings.fast_layer_velocity_m_per_s,
        settings.fast_layer_extent,
        6e-3,
    )
    roots = root_nodes(lv_mesh, settings.earliest_activation_aha_segments, 6e-3)
    assert np.all(times[roots] == 0.0)
    on_layer = np.isfinite(times)
    assert on_layer.sum() > roots.sum()
    points = lv_mesh.points_m
    apicobasal = (points[:, 0] - points[:, 0].min()) / np.ptp(points[:, 0])
    assert np.all(apicobasal[on_layer & ~roots] <= settings.fast_layer_extent)
    # Paths run over the surface at the layer's velocity: no node is reached faster than by
    # the straight line from the nearest root.
    nearest = np.min(
        np.linalg.norm(points[on_layer][:, None] - points[roots][None], axis=2), axis=1
    )
    assert np.all(times[on_layer] >= 1e3 * nearest / settings.fast_layer_velocity_m_per_s - 1e-9)


def test_total_activation_of_a_healthy_ventricle_is_physiological(ep, near_healthy, make_designs):
    """The fast endocardial layer makes activation take as long as in human hearts: latest
    epicardial activation 63-96 ms after QRS onset (Wyndham et al., Circulation 1979;59:161),
    normal QRS under 110 ms (Surawicz et al., JACC 2009;53:976). Band: 60-110 ms."""
    mesh = EllipsoidMesher(EllipsoidMeshSettings()).build(near_healthy)
    designs = make_designs("pegda-3400", "scar_only", 20.0, 200.0, 0.001, 0.1)
    total = ep.simulate(near_healthy, mesh, designs, None)["total_activation_time_ms"][0]
    assert 60.0 <= total <= 110.0


def test_infarct_slows_activation_and_lowers_the_reentry_vulnerability_index(
    ep, patient, near_healthy, lv_mesh, make_designs
):
    """Slow conduction through the border zone delays activation (late potentials; Kléber &
    Rudy 2004) and brings repolarisation and neighbouring activation closer, the substrate the
    re-entry vulnerability index measures (Child et al., Heart Rhythm 2015;12:1644: low RVI
    marks sites of re-entry). Bands: longer total activation and a lower RVI with the 24%
    infarct than with a 2% one, on the same resolution."""
    designs = make_designs("pegda-3400", "scar_only", 20.0, 200.0, 0.001, 0.1)
    small = ep.simulate(
        near_healthy, EllipsoidMesher(EllipsoidMeshSettings()).build(near_healthy), designs, None
    )
    large = ep.simulate(patient, lv_mesh, designs, None)
    assert large["total_activation_time_ms"][0] > small["total_activation_time_ms"][0] + 10.0
    rvi = "reentry_vulnerability_index_ms"
    assert large[rvi][0] < small[rvi][0] - 10.0


def test_scar_does_not_conduct(ep, patient, lv_mesh, make_designs):
    designs = make_designs("pegda-3400", "scar_only", 20.0, 200.0, 0.001, 0.1)
    _, failed, _, maps = evaluate_designs(patient, lv_mesh, designs, ep.tuned(lv_mesh), ep.settings)
    assert not failed.any()
    scar_only_nodes = node_mask_of_elements(
        lv_mesh.tetrahedra,
        lv_mesh.cell_data["region"] == REGION_SCAR,
        len(lv_mesh.points_m),
        require_all=True,
    )
    assert scar_only_nodes.any()
    activation = maps["activation_time_ms"]
    assert np.isnan(activation[scar_only_nodes, 0]).all()
    # Everything else activates and repolarises: the myocytes next to the scar are not loaded
    # by its volume.
    assert np.isfinite(activation[~scar_only_nodes, 0]).all()
    assert np.isfinite(maps["repolarisation_time_ms"][~scar_only_nodes, 0]).all()


def test_conductive_gel_speeds_border_zone_conduction(ep, patient, lv_mesh, make_designs):
    """Conductive injectables restore conduction in the infarct: conduction across the scar
    +33% with polypyrrole-chitosan (He et al., Biomaterials 2020), velocity back to near the
    uninjured heart's (Cui et al., Theranostics 2018). Bands: with a 1 S/m gel over the infarct
    and border zone, faster border-zone conduction and shorter total activation than with a
    non-conductive gel of the same volume; a 0.001 S/m gel does not speed conduction."""
    designs = make_designs(
        ["pegda-3400", "pedot-pss", "pegda-3400"],
        ["scar_bz100", "scar_bz100", "scar_only"],
        20.0,
        200.0,
        [0.001, 1.0, 0.001],
        [2.0, 2.0, 0.1],
    )
    outcomes = ep.simulate(patient, lv_mesh, designs, None)
    velocity = outcomes["bz_conduction_velocity_m_per_s"]
    total = outcomes["total_activation_time_ms"]
    assert velocity[1] > 1.2 * velocity[0] and total[1] < total[0]
    assert velocity[0] <= velocity[2] + 0.01


def test_reentry_vulnerability_index_is_repolarisation_minus_neighbouring_activation():
    """Three nodes in a row 1 mm apart, activated in turn, the first holding most of the
    volume: its RVI is its repolarisation minus the latest neighbour's activation within the
    radius, and it is the most vulnerable 5% of the volume."""
    points = np.array([[0.0, 0.0, 0.0], [1e-3, 0.0, 0.0], [2e-3, 0.0, 0.0]])
    activation = np.array([[0.0], [10.0], [60.0]])
    repolarisation = np.array([[250.0], [300.0], [320.0]])
    mass = np.array([10.0, 1.0, 1.0])
    excitable = np.ones(3, dtype=bool)
    wide = reentry_vulnerability_index(activation, repolarisation, points, mass, excitable, 2.5e-3)
    assert wide[0] == pytest.approx(250.0 - 60.0)
    near = reentry_vulnerability_index(activation, repolarisation, points, mass, excitable, 1.5e-3)
    assert near[0] == pytest.approx(250.0 - 10.0)


def test_conforms_and_writes_activation_and_repolarisation_maps(
    ep, patient, lv_mesh, make_designs, tmp_path
):
    designs = make_designs("gelma-cnt", ["scar_bz25", "scar_bz50"], 15.0, 30.0, 0.2, 1.0)
    # Lane-mates share a step: results depend on the batch within the scheme's accuracy
    # (docs/physics.md §3.1).
    outcomes = check_simulator(ep, patient, lv_mesh, designs, tmp_path, batch_rtol=1e-2)
    # Border-zone conduction is slower than healthy tissue's 0.6 m/s along fibres.
    assert np.all(outcomes["bz_conduction_velocity_m_per_s"] < 0.6)
    fields = meshio.read(tmp_path / "first" / "activation.xdmf").point_data
    assert set(fields) == {
        f"{name}_design_{row:05d}"
        for name in ("activation_time_ms", "repolarisation_time_ms")
        for row in range(2)
    }


def test_infeasible_design_is_flagged(ep, patient, lv_mesh, make_designs):
    designs = make_designs("fibrin", "scar_only", 1.0, 5.0, 0.9, 1.0)
    outcomes = ep.simulate(patient, lv_mesh, designs, None)
    assert outcomes.failed[0]
    assert "conductivity_s_per_m 0.9 is outside fibrin's achievable" in outcomes.failure_reason[0]


def test_activation_converges_with_the_mesh(patient, make_designs):
    """The default mesh against a finer one: total activation of the infarcted heart within 5%,
    and the conductive gel's effect on it within 3 %-points."""
    designs = make_designs(
        ["pegda-3400", "pegda-3400"], "scar_bz100", 20.0, 200.0, [0.001, 0.03], [0.1, 2.0]
    )
    default = EllipsoidMeshSettings().element_size_mm
    results = []
    for size in (default, 3.0):
        mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=size)).build(patient)
        total = ReferenceEP(ReferenceEPSettings()).simulate(patient, mesh, designs, None)[
            "total_activation_time_ms"
        ]
        results.append(total)
    coarse, fine = results
    assert coarse[0] == pytest.approx(fine[0], rel=0.05)
    effect = [100 * (1 - r[1] / r[0]) for r in results]
    assert effect[0] == pytest.approx(effect[1], abs=3.0)


def test_one_simulator_tunes_each_resolution_once_for_a_whole_cohort(lv_mesh, monkeypatch):
    """Patients meshed at one resolution differ in mean edge length by hundredths of a
    millimetre; they share the tuned nodes around it instead of being tuned one by one."""
    from hydraopt_simulators.ep import tissue

    tuned_at = []

    def counting(edge, targets):
        tuned_at.append(edge)
        return tissue.TunedConductivity(edge, {name: 0.1 for name in targets})

    monkeypatch.setattr(tissue, "tune", counting)
    from hydraopt.domain.mesh import mean_edge_length_m

    simulator = ReferenceEP(ReferenceEPSettings())
    edge = mean_edge_length_m(lv_mesh.points_m, lv_mesh.tetrahedra)
    scales = [s for s in (1.0, 1.004, 0.996) if tuning_nodes(edge * s) == tuning_nodes(edge)]
    assert len(scales) >= 2  # patients whose edge lengths share one grid interval
    for scale in scales:
        simulator.tuned(replace(lv_mesh, points_m=lv_mesh.points_m * scale))
    assert sorted(tuned_at) == sorted(set(tuning_nodes(edge)))  # two nodes, whatever the count


@pytest.fixture(scope="module")
def screening_agreement(patient, space):
    """Screening fidelity against the monodomain on a 6 mm mesh (the benchmark checks the
    default 4 mm at scale): 160 designs over the whole design space, 6 sampled per coverage."""
    from hydraopt_plugins.generators import GeneratorSettings, RandomGenerator
    from hydraopt_simulators.ep.activation import design_quantities, heart_model
    from hydraopt_simulators.ep.screening import agreement_with_monodomain

    mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=6.0)).build(patient)
    settings = ReferenceEPSettings(fidelity="screening")
    simulator = ReferenceEP(settings)
    generator = RandomGenerator(GeneratorSettings(within_polymer_ranges=True))
    designs = generator.generate(space, 160, np.random.default_rng(4))
    _, _, phi, phi_sigma = design_quantities(patient, designs, settings)
    model = heart_model(mesh, simulator.tuned(mesh), settings)
    return agreement_with_monodomain(
        model, designs.coverage_index, phi, phi_sigma, settings, per_coverage=6
    )


def test_screening_agrees_with_the_monodomain(screening_agreement):
    """Total activation within 2 ms or 2%, border-zone velocity within 5%, block agreeing and
    the RVI ranked alike (Spearman >= 0.95), over every coverage and the whole conductivity
    range."""
    agreement = screening_agreement
    assert set(agreement.coverage) == {"scar_only", "scar_bz25", "scar_bz50", "scar_bz100"}
    assert agreement.activation_within(2.0, 0.02).all()
    assert np.nanmax(agreement.velocity_error()) < 0.05
    assert agreement.block_agrees().all()
    assert agreement.rvi_rank_correlation() >= 0.95
    # The gel's conductance spans the range where it matters: activation changes by more
    # than the tolerance across the sample, so agreement is not agreement with a constant.
    activation = agreement.monodomain["total_activation_time_ms"]
    assert np.ptp(activation) > 20.0


def test_screening_solves_few_designs_directly(ep, patient, lv_mesh, make_designs):
    """A coverage with fewer designs than curves would cost is solved design by design: the
    screening fidelity then equals the validation fidelity."""
    designs = make_designs(
        ["pegda-3400"] * 3, "scar_bz50", 20.0, 200.0, [0.001, 0.03, 0.3], [0.5, 1.0, 2.0]
    )
    screening = ReferenceEP(ReferenceEPSettings(fidelity="screening"))
    validation = ep.simulate(patient, lv_mesh, designs, None)
    screened = screening.simulate(patient, lv_mesh, designs, None)
    for name in validation.values:
        np.testing.assert_array_equal(screened[name], validation[name])


def _half_blocked_bar(step_ms: float, plateau_step_ms: float | None):
    """A bar of tissue (2 mm cubes) stimulated at one end whose far half conducts nothing:
    its nodes stay at rest, blocked, whatever the time."""
    from hydraopt.domain.mesh import box_tetrahedra
    from hydraopt_simulators.ep.solver import Problem
    from hydraopt_simulators.ep.tissue import conductivity_tensors
    from hydraopt_simulators.fem import lumped_mass, stiffness_matrix

    spacing = 2e-3
    points, tetrahedra, _ = box_tetrahedra((20, 2, 2), (20 * spacing, 2 * spacing, 2 * spacing))
    x = points[:, 0]
    conducting = points[tetrahedra, 0].max(axis=1) <= 10 * spacing + 1e-9
    fibres = np.tile([1.0, 0.0, 0.0], (len(tetrahedra), 1))
    sigma = np.where(conducting, 0.5, 0.0)
    stiffness = stiffness_matrix(points, tetrahedra, conductivity_tensors(fibres, sigma, sigma))
    return Problem(
        mass=lumped_mass(points, tetrahedra),
        parts=[(stiffness, np.ones(1))],
        excitable=np.ones(len(points), dtype=bool),
        stimulus_ms=np.where(x <= 1e-9, 0.0, np.inf),
        step_ms=step_ms,
        plateau_step_ms=plateau_step_ms,
    )


def test_a_beat_ends_once_nothing_more_can_activate():
    """A beat with block ends at quiescence, long before max_time_ms, and nothing would have
    crossed later: a longer max_time_ms gives the same activation and repolarisation."""
    from hydraopt_simulators.ep.solver import solve_activation

    problem = _half_blocked_bar(0.1, 0.25)
    short = solve_activation(problem, max_time_ms=600.0, repolarise=True)
    long = solve_activation(problem, max_time_ms=2000.0, repolarise=True)
    blocked = ~np.isfinite(short.times_ms[:, 0])
    assert 0.2 < blocked.mean() < 0.6
    assert short.end_ms < 450.0 and long.end_ms == short.end_ms
    np.testing.assert_array_equal(short.times_ms, long.times_ms)
    np.testing.assert_array_equal(short.repolarisation_ms, long.repolarisation_ms)
    assert np.isfinite(short.repolarisation_ms[~blocked]).all()


def test_the_plateau_step_leaves_activation_untouched():
    """The larger step is taken only once no upstroke can be under way: activation times are
    those of the upstroke's step throughout, repolarisation within a millisecond."""
    from hydraopt_simulators.ep.solver import PLATEAU_STEP_MS, UPSTROKE_STEP_MS, solve_activation

    fine = solve_activation(_half_blocked_bar(UPSTROKE_STEP_MS, None), 600.0, repolarise=True)
    plateau = solve_activation(
        _half_blocked_bar(UPSTROKE_STEP_MS, PLATEAU_STEP_MS), 600.0, repolarise=True
    )
    np.testing.assert_array_equal(plateau.times_ms, fine.times_ms)
    repolarised = np.isfinite(fine.repolarisation_ms)
    assert np.array_equal(np.isfinite(plateau.repolarisation_ms), repolarised)
    larger, fixed = plateau.repolarisation_ms[repolarised], fine.repolarisation_ms[repolarised]
    difference = np.abs(larger - fixed)
    assert 0.0 < difference.max() < 1.0


def test_a_designs_beat_does_not_depend_on_its_lane_mates(ep, lv_mesh):
    """Designs are integrated a few at a time, each lane with its own coefficients where the
    gel differs: solved together (a full lane and a short one, every coverage, shared and own
    rows) a design's activation is the one it has solved alone."""
    from hydraopt_simulators.ep.activation import heart_model
    from hydraopt_simulators.ep.kernel import LANES

    settings = ReferenceEPSettings()
    model = heart_model(lv_mesh, ep.tuned(lv_mesh), settings)
    coverage = np.array([0, 3, 1, 2, 3, 0])
    phi = np.array([0.05, 0.1, 0.2, 0.15, 0.1, 0.2])
    phi_sigma = np.array([1e-5, 1e-4, 3e-4, 1e-5, 2e-4, 1e-4])  # one stable step for all
    assert len(phi) > LANES
    together, _ = model.solve(coverage, phi, phi_sigma, settings, repolarise=False)
    for d in range(len(phi)):
        alone, _ = model.solve(
            coverage[d : d + 1], phi[d : d + 1], phi_sigma[d : d + 1], settings, False
        )
        np.testing.assert_allclose(together[:, d], alone[:, 0], rtol=0, atol=1e-9)
    assert np.ptp(np.nanmax(np.where(np.isfinite(together), together, np.nan), axis=0)) > 0

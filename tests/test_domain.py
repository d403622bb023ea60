from dataclasses import fields, replace

import numpy as np
import pytest

from hydraopt.domain import (
    CONTINUOUS_FIELDS,
    COVERAGE_PATTERNS,
    FEATURE_NAMES,
    Cohort,
    ContinuousParameter,
    DesignBatch,
    Outcomes,
    OutputSpec,
    Patient,
)
from hydraopt.errors import DataError
from hydraopt.testing import example_patient, example_space


def test_patient_fields_follow_the_feature_order():
    # The 11 features, then the infarct's age (physics input, not a surrogate feature) and
    # the record's origin (neither).
    assert tuple(f.name for f in fields(Patient))[1:-2] == FEATURE_NAMES
    assert [f.name for f in fields(Patient)[-2:]] == ["infarct_age_days", "origin"]
    assert "origin" not in example_patient().physical_record()
    assert len(FEATURE_NAMES) == 11
    assert example_patient().features().shape == (11,)


@pytest.mark.parametrize("age", [-1.0, float("nan"), 1e6])
def test_infarct_age_must_be_days_since_the_infarct(age):
    with pytest.raises(DataError, match=r"EXAMPLE01.*infarct_age_days: expected days"):
        replace(example_patient(), infarct_age_days=age).validated()


def test_out_of_range_feature_names_patient_and_field():
    patient = replace(example_patient(), lvef_pct=95.0)
    with pytest.raises(DataError, match=r"EXAMPLE01.*lvef_pct: 95 % is outside"):
        patient.validated()


def test_esv_must_be_below_edv():
    patient = replace(example_patient(), esv_ml=180.0)
    with pytest.raises(DataError, match="esv_ml"):
        patient.validated()


def test_ef_must_agree_with_volumes():
    patient = replace(example_patient(), lvef_pct=55.0)
    with pytest.raises(DataError, match=r"lvef_pct: 55% disagrees with \(EDV-ESV\)/EDV"):
        patient.validated()


def test_cohort_rejects_duplicate_ids():
    patient = example_patient()
    with pytest.raises(DataError, match=r"EXAMPLE01.*twice"):
        Cohort((patient, patient))


def test_cohort_columns_round_trip():
    cohort = Cohort(
        (example_patient(), replace(example_patient(), patient_id="B", infarct_age_days=4.0))
    )
    again = Cohort.from_columns(cohort.to_columns())
    assert again == cohort
    assert cohort.feature_matrix().shape == (2, 11)


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_parameter_unit_mapping_round_trips(scale):
    parameter = ContinuousParameter("x", "kPa", 0.5, 50.0, scale, "")
    u = np.linspace(0, 1, 11)
    x = parameter.from_unit(u)
    assert x[0] == pytest.approx(0.5) and x[-1] == pytest.approx(50.0)
    np.testing.assert_allclose(parameter.to_unit(x), u, atol=1e-12)
    if scale == "log":  # the midpoint of a log scale is the geometric mean
        assert x[5] == pytest.approx(5.0)


def test_bad_bounds_are_rejected():
    with pytest.raises(ValueError, match="min 5 must be below max 1"):
        ContinuousParameter("x", "kPa", 5.0, 1.0, "linear", "")
    with pytest.raises(ValueError, match="log-scaled range needs min > 0"):
        ContinuousParameter("x", "kPa", 0.0, 1.0, "log", "")


def _batch(n=5):
    space = example_space()
    rng = np.random.default_rng(0)
    return space.designs_from_unit(rng.integers(0, 2, n), rng.integers(0, 4, n), rng.random((n, 4)))


def test_design_batch_is_columnar_and_sliceable():
    batch = _batch(10)
    assert len(batch) == 10
    assert set(batch.columns()) == {"polymer_index", "coverage_index", *CONTINUOUS_FIELDS}
    part = batch.take(np.arange(3))
    assert len(part) == 3
    both = DesignBatch.concat([part, batch.take(slice(3, None))])
    for name, values in batch.columns().items():
        np.testing.assert_array_equal(both.columns()[name], values)
    # unit_coordinates inverts the mapping the batch was built with, on each parameter's scale
    unit = np.random.default_rng(0).random((10, 4))
    rebuilt = batch.space.designs_from_unit(batch.polymer_index, np.zeros(10, int), unit)
    np.testing.assert_allclose(rebuilt.unit_coordinates(), unit, rtol=1e-12)
    assert "example-" in batch.describe(0)


def test_design_batch_rejects_ragged_columns():
    batch = _batch(4)
    columns = batch.columns()
    columns["t50_days"] = columns["t50_days"][:3]
    with pytest.raises(ValueError, match="t50_days has 3 rows"):
        DesignBatch.from_columns(batch.space, columns)


def test_designs_outside_their_polymers_range_are_flagged():
    space = example_space()
    # example-gelma reaches 1-30 kPa: 40 kPa is within the space but not makeable with it.
    batch = DesignBatch.from_columns(
        space,
        {
            "polymer_index": np.array([0, 1]),
            "coverage_index": np.array([0, 0]),
            "stiffness_kpa": np.array([40.0, 40.0]),
            "t50_days": np.array([30.0, 30.0]),
            "conductivity_s_per_m": np.array([0.02, 0.02]),
            "thickness_mm": np.array([1.0, 1.0]),
        },
    )
    masks = batch.outside_polymer_range()
    assert masks["stiffness_kpa"].tolist() == [True, False]
    assert not batch.out_of_bounds()["stiffness_kpa"].any()


def test_coverage_indices_are_global():
    space = example_space()
    from dataclasses import replace as dc_replace

    narrow = dc_replace(space, coverages=("scar_bz50", "scar_bz100"))
    batch = narrow.designs_from_unit(np.array([0, 0]), np.array([0, 1]), np.full((2, 4), 0.5))
    assert [COVERAGE_PATTERNS[i] for i in batch.coverage_index] == ["scar_bz50", "scar_bz100"]


def test_outcomes_check_shapes_and_merge():
    specs = (
        OutputSpec("delta_ef_pct", "%", "change in EF"),
        OutputSpec("delta_ef_trajectory_pct", "%", "by week", shape=(4,)),
    )
    outcomes = Outcomes(
        specs, {"delta_ef_pct": np.zeros(3), "delta_ef_trajectory_pct": np.zeros((3, 4))}
    )
    assert len(outcomes) == 3 and not outcomes.failed.any()
    with pytest.raises(ValueError, match=r"expected \(3, 4\)"):
        Outcomes(specs, {"delta_ef_pct": np.zeros(3), "delta_ef_trajectory_pct": np.zeros((3, 2))})
    other = Outcomes(
        (OutputSpec("total_activation_ms", "ms", ""),),
        {"total_activation_ms": np.ones(3)},
        failed=np.array([False, True, False]),
        failure_reason=np.array(["", "solver diverged", ""], dtype=object),
    )
    merged = Outcomes.merge([outcomes, other])
    assert merged.names == ("delta_ef_pct", "delta_ef_trajectory_pct", "total_activation_ms")
    assert merged.failed.tolist() == [False, True, False]
    assert merged.failure_reason[1] == "solver diverged"
    with pytest.raises(ValueError, match="more than one simulator"):
        Outcomes.merge([outcomes, outcomes])

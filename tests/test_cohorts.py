import numpy as np
import pytest

from hydraopt.cohorts import read_cohort_csv, write_cohort_csv
from hydraopt.domain import FEATURE_NAMES
from hydraopt.errors import DataError
from hydraopt.synthetic_cohort import synthetic_cohort

HEADER = "patient_id," + ",".join(FEATURE_NAMES)
ROW_A = "P01,38,-11.4,170,105.4,24,8.5,25,20,1.25,0.6,9"
ROW_B = "P02,26,-8,240,177.6,30,10,24,18,1.3333,0.7,10"


def write(tmp_path, *lines):
    path = tmp_path / "cohort.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_a_valid_cohort(tmp_path):
    cohort = read_cohort_csv(write(tmp_path, HEADER, ROW_A, ROW_B))
    assert cohort.ids == ("P01", "P02")
    assert cohort.get("P02").edv_ml == 240


def test_round_trip_through_csv(tmp_path):
    cohort = synthetic_cohort(5, seed=3)
    path = tmp_path / "out.csv"
    write_cohort_csv(cohort, path)
    again = read_cohort_csv(path)
    np.testing.assert_allclose(again.feature_matrix(), cohort.feature_matrix(), rtol=1e-5)
    ages = [p.infarct_age_days for p in again], [p.infarct_age_days for p in cohort]
    np.testing.assert_allclose(*ages, rtol=1e-5)
    assert [p.origin for p in again] == [p.origin for p in cohort]


def test_infarct_age_column_is_optional_with_a_healed_default(tmp_path):
    from hydraopt.domain import DEFAULT_INFARCT_AGE_DAYS

    without = read_cohort_csv(write(tmp_path, HEADER, ROW_A))
    assert without.patients[0].infarct_age_days == DEFAULT_INFARCT_AGE_DAYS
    given = read_cohort_csv(write(tmp_path, HEADER + ",infarct_age_days", ROW_A + ",3.5"))
    assert given.patients[0].infarct_age_days == 3.5
    with pytest.raises(DataError, match=r"cohort.csv:2: patient 'P01': column infarct_age_days"):
        read_cohort_csv(write(tmp_path, HEADER + ",infarct_age_days", ROW_A + ",-2"))


def test_origin_column_marks_real_and_synthetic_patients(tmp_path):
    without = read_cohort_csv(write(tmp_path, HEADER, ROW_A))
    assert without.patients[0].origin == ""  # not stated
    given = read_cohort_csv(write(tmp_path, HEADER + ",origin", ROW_A + ",real", ROW_B + ","))
    assert [p.origin for p in given] == ["real", ""]
    assert {p.origin for p in synthetic_cohort(3, seed=1)} == {"synthetic"}
    with pytest.raises(DataError, match=r"cohort.csv:2: patient 'P01': column origin: 'MRI'"):
        read_cohort_csv(write(tmp_path, HEADER + ",origin", ROW_A + ",MRI"))


def test_stress_concentration_column_is_optional(tmp_path):
    header = HEADER.replace(",stress_concentration", "")
    row = "P01,38,-11.4,170,105.4,24,8.5,25,20,0.6,9"
    cohort = read_cohort_csv(write(tmp_path, header, row))
    assert cohort.patients[0].stress_concentration == pytest.approx(1.25)


def test_missing_column_is_named(tmp_path):
    header = HEADER.replace(",gls_pct", "")
    row = ROW_A.replace(",-11.4", "")
    with pytest.raises(DataError, match=r"cohort.csv: missing column\(s\) gls_pct"):
        read_cohort_csv(write(tmp_path, header, row))


def test_row_with_extra_cells_names_the_line(tmp_path):
    with pytest.raises(
        DataError, match=r"cohort.csv:3: the row has 13 cells but the header has 12"
    ):
        read_cohort_csv(write(tmp_path, HEADER, ROW_A, ROW_B + ",x"))


def test_repeated_column_is_an_error(tmp_path):
    with pytest.raises(
        DataError, match=r"cohort.csv:1: column\(s\) lvef_pct appear more than once"
    ):
        read_cohort_csv(write(tmp_path, HEADER + ",lvef_pct", ROW_A + ",38"))


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "cohort.csv"
    path.write_bytes((HEADER + "\n" + ROW_A + "\nP\xff2" + ROW_B[3:] + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"cohort.csv:3: the cohort file is not UTF-8 text"):
        read_cohort_csv(path)


def test_missing_value_names_row_and_column(tmp_path):
    row = ROW_A.replace(",170,", ",,")
    with pytest.raises(
        DataError, match=r"cohort.csv:2: patient 'P01': column edv_ml: missing value"
    ):
        read_cohort_csv(write(tmp_path, HEADER, row))


def test_non_number_names_row_and_column(tmp_path):
    row = ROW_B.replace(",30,", ",thirty,")
    with pytest.raises(
        DataError,
        match=r"cohort.csv:3: patient 'P02': column scar_fraction_pct: "
        r"expected a number, got 'thirty'",
    ):
        read_cohort_csv(write(tmp_path, HEADER, ROW_A, row))


def test_out_of_range_value_names_row_and_column(tmp_path):
    row = ROW_A.replace(",0.6,", ",1.6,")
    with pytest.raises(
        DataError,
        match=r"cohort.csv:2: patient 'P01': column transmurality: 1.6 1 "
        r"is outside the physiological range",
    ):
        read_cohort_csv(write(tmp_path, HEADER, row))


def test_duplicate_id_names_both_rows(tmp_path):
    with pytest.raises(
        DataError,
        match=r"cohort.csv:3: column patient_id: duplicate id 'P01' "
        r"\(first on line 2\)",
    ):
        read_cohort_csv(write(tmp_path, HEADER, ROW_A, ROW_A))


def test_every_problem_is_reported_at_once(tmp_path):
    bad_a = ROW_A.replace(",170,", ",,")
    bad_b = ROW_B.replace(",26,", ",260,")
    with pytest.raises(DataError) as caught:
        read_cohort_csv(write(tmp_path, HEADER, bad_a, bad_b))
    assert "cohort.csv:2" in str(caught.value) and "cohort.csv:3" in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot read the cohort file"):
        read_cohort_csv(tmp_path / "nope.csv")


def test_synthetic_cohort_is_seeded_and_valid():
    first = synthetic_cohort(40, seed=11)
    assert len(first) == 40
    np.testing.assert_array_equal(
        first.feature_matrix(), synthetic_cohort(40, seed=11).feature_matrix()
    )
    assert not np.array_equal(
        first.feature_matrix(), synthetic_cohort(40, seed=12).feature_matrix()
    )
    for patient in first:
        assert patient.problems() == []


def test_synthetic_cohort_follows_its_populations():
    cohort = synthetic_cohort(200, seed=5, chronic_fraction=0.5)
    ef = cohort.feature_matrix()[:, FEATURE_NAMES.index("lvef_pct")]
    chronic = ef[100:]
    assert chronic.max() <= 35.0  # AUGMENT-HF inclusion: EF <= 35%
    assert 23.0 < chronic.mean() < 29.0
    m = cohort.feature_matrix()
    edv, esv = m[:, FEATURE_NAMES.index("edv_ml")], m[:, FEATURE_NAMES.index("esv_ml")]
    np.testing.assert_allclose(100 * (edv - esv) / edv, ef, atol=0.05)
    # Larger infarcts, lower EF in the subacute population (Wu2008, r = -0.75).
    scar = m[:100, FEATURE_NAMES.index("scar_fraction_pct")]
    assert np.corrcoef(scar, ef[:100])[0, 1] < -0.5
    # GLS tracks EF (Delgado2008).
    gls = m[:, FEATURE_NAMES.index("gls_pct")]
    assert np.corrcoef(np.abs(gls), ef)[0, 1] > 0.5
    # Subacute patients are treated days after the infarct (PRESERVATION-I: 2-5 days), chronic
    # ones months to years after.
    ages = np.array([p.infarct_age_days for p in cohort])
    assert np.all((ages[:100] >= 2.0) & (ages[:100] <= 5.0))
    assert np.all(ages[100:] >= 180.0)

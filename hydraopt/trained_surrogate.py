"""The train stage's surrogate as later stages use it: loaded from its artifact, checked
against a study's polymers and design space, and the patients' splits it was trained with."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.domain import PATIENT_FEATURES, DesignSpace, Patient
from hydraopt.domain.training import DATASET_FEATURE_NAMES
from hydraopt.errors import DataError
from hydraopt.plugin_calls import PluginHandle
from hydraopt.store import TablesArtifact

# How far (as a share of a parameter's span on its own scale) the designs a policy can reach
# may lie beyond the training rows' range: a sampled plan never hits the bounds exactly, and
# a surrogate bridges gaps of this size as it bridges those between its samples (assumed).
RANGE_SLACK = 0.1


def patient_splits(dataset: TablesArtifact) -> dict[str, str]:
    """Each patient's split in the dataset artifact."""
    rows = dataset.table("rows")
    return dict(
        zip(
            np.asarray(rows["patient_id"]).astype(str),
            np.asarray(rows["split"]).astype(str),
            strict=True,
        )
    )


def load_trained_surrogate(surrogate: PluginHandle, encoder: PluginHandle, folder: Path) -> Any:
    """The train stage's saved surrogate in ``folder``, loaded with the pipeline's encoder."""
    model = surrogate.build_new()
    try:
        model.load(folder, encoder.build())
    except ValueError as exc:
        raise DataError(f"surrogate: {exc}") from None
    return model


def domain_problems(surrogate: Any, space: DesignSpace) -> list[str]:
    """Polymers the surrogate never saw and design-space bounds beyond its training rows,
    each named; empty when the surrogate does not say what it was trained on."""
    domain = getattr(surrogate, "training_domain", None)
    if domain is None:
        return []
    problems = [
        f"polymer {p.name!r} ({p.psmiles}) is not among the surrogate's training polymers"
        for p in space.polymers
        if p.psmiles not in domain.psmiles
    ]
    # What the policy can reach: per parameter, the space's bounds where some polymer can make
    # the design (designs no polymer can make are penalised, never scored), in unit-cube
    # coordinates, against the training rows' range.
    reachable = space.polymer_unit_bounds()
    for j, parameter in enumerate(space.parameters):
        makeable = reachable[:, j, 0] <= reachable[:, j, 1]
        if not makeable.any():
            continue
        low = float(np.clip(reachable[makeable, j, 0].min(), 0.0, 1.0))
        high = float(np.clip(reachable[makeable, j, 1].max(), 0.0, 1.0))
        trained = parameter.to_unit(np.array(domain.feature_ranges[parameter.name]))
        if low < trained[0] - RANGE_SLACK or high > trained[1] + RANGE_SLACK:
            shown = parameter.from_unit(np.array([low, high]))
            seen = domain.feature_ranges[parameter.name]
            problems.append(
                f"design_space.{parameter.name}: designs reach [{shown[0]:.4g}, "
                f"{shown[1]:.4g}] {parameter.unit}, beyond the surrogate's training range "
                f"[{seen[0]:.4g}, {seen[1]:.4g}]"
            )
    for coverage in space.coverages:
        name = f"coverage_{coverage}"
        if name in DATASET_FEATURE_NAMES and domain.feature_ranges[name][1] < 1:
            problems.append(
                f"design_space.coverage_patterns: {coverage!r} never occurs in the "
                "surrogate's training rows"
            )
    return problems


def patient_extrapolation(surrogate: Any, patient: Patient) -> list[str]:
    """The patient's features outside the range of the surrogate's training patients, each
    with its value and that range: there the surrogate extrapolates, and on the seeds-scale
    study that is where its error on a new patient lies (benchmarks/RESULTS.md). Empty when
    the patient lies within, or when the surrogate does not say what it was trained on."""
    domain = getattr(surrogate, "training_domain", None)
    if domain is None:
        return []
    outside = []
    for feature in PATIENT_FEATURES:
        if feature.name not in domain.feature_ranges:
            continue
        low, high = domain.feature_ranges[feature.name]
        value = float(getattr(patient, feature.name))
        if value < low or value > high:
            unit = "" if feature.unit == "1" else f" {feature.unit}"  # "1": dimensionless
            outside.append(f"{feature.name} {value:.4g}{unit} (trained on {low:.4g} to {high:.4g})")
    return outside


def report_extrapolation(
    surrogate: Any, patients: Iterable[Patient], say: Callable[[str], None], stage: str
) -> None:
    """One line per patient whose features lie outside the surrogate's training patients."""
    for patient in patients:
        outside = patient_extrapolation(surrogate, patient)
        if outside:
            say(
                f"  {stage}: patient {patient.patient_id} lies outside the surrogate's training "
                f"patients in {'; '.join(outside)}: its predicted outcomes extrapolate"
            )

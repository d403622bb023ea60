"""Small, self-contained inputs for conformance checks: a two-polymer design space, designs,
a patient, a slab mesh, training rows, a scorer, design environments and filter candidates.
None of them needs a data file, a mesher or a trained model.

The training targets and the scorer's predictions come from one fixed analytic function of
the features (:func:`example_outcomes`): they exercise a learner's mechanics (fit, predict,
save, load) on data with a known structure and mean nothing clinically.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from hydraopt.domain import (
    DesignBatch,
    DesignSpace,
    OutputSpec,
    Patient,
    Polymer,
    PolymerLibrary,
    PropertyRange,
    SurrogateInputs,
    TrainingData,
)
from hydraopt.domain.mesh import (
    REGION_BORDER_ZONE,
    REGION_REMOTE,
    REGION_SCAR,
    PatientMesh,
    box_tetrahedra,
    treatment_field,
)
from hydraopt.domain.training import DATASET_FEATURE_NAMES


def example_space() -> DesignSpace:
    """A small design space of two polymers with the default bounds, needing no data files."""
    polymers = (
        Polymer(
            "example-gelma",
            "Example GelMA",
            "GelMA",
            "[*]NCC(=O)N1CCCC1C(=O)NC(CCCCNC(=O)C(C)=C)C(=O)[*]",
            PropertyRange(1.0, 30.0),
            PropertyRange(7.0, 60.0),
            PropertyRange(0.01, 0.1),
            1.3,
            "surface",
            ("example",),
        ),
        Polymer(
            "example-pegda",
            "Example PEGDA",
            "PEGDA",
            "[*]CCO[*]",
            PropertyRange(0.5, 50.0),
            PropertyRange(14.0, 180.0),
            PropertyRange(0.005, 0.05),
            1.8,
            "bulk",
            ("example",),
        ),
    )
    return DesignSpace(PolymerLibrary(polymers, source="hydraopt.testing"))


def example_designs(n: int = 8, seed: int = 0, space: DesignSpace | None = None) -> DesignBatch:
    """``n`` designs of :func:`example_space` (or ``space``), every one within its polymer's
    achievable ranges and the space's bounds, cycling through the polymers and coverage
    patterns: inputs for a simulator's conformance check without a generator."""
    space = space or example_space()
    rng = np.random.default_rng(seed)
    polymer_index = np.arange(n) % len(space.polymers)
    coverage_choice = np.arange(n) % len(space.coverages)
    columns: dict[str, np.ndarray] = {
        "polymer_index": polymer_index,
        "coverage_index": space.coverage_indices[coverage_choice],
    }
    for parameter in space.parameters:
        low = np.full(n, parameter.low)
        high = np.full(n, parameter.high)
        for i, k in enumerate(polymer_index):
            achievable = getattr(space.polymers[int(k)], parameter.name, None)
            if achievable is not None:
                low[i] = max(low[i], achievable.low)
                high[i] = min(high[i], achievable.high)
        columns[parameter.name] = low + rng.random(n) * (high - low)
    return DesignBatch.from_columns(space, columns)


def example_patient() -> Patient:
    """A plausible subacute anterior STEMI patient."""
    return Patient(
        patient_id="EXAMPLE01",
        lvef_pct=38.0,
        gls_pct=-11.4,
        edv_ml=170.0,
        esv_ml=105.4,
        scar_fraction_pct=24.0,
        bz_fraction_pct=8.5,
        bz_stress_kpa=25.0,
        healthy_stress_kpa=20.0,
        stress_concentration=1.25,
        transmurality=0.6,
        wall_thickness_mm=9.0,
    ).validated()


def example_mesh(
    patient: Patient | None = None, cells: tuple[int, int, int] = (8, 8, 3)
) -> PatientMesh:
    """A slab of myocardium (40 x 40 mm, the patient's wall thickness) cut into tetrahedra,
    with every cell data field a simulator needs: a scar at the centre of its endocardial
    face, surrounded by border zone, fibres rotating from +60 to -60 degrees through the wall.
    It needs no mesher and is meant for conformance tests, not for physics."""
    patient = patient or example_patient()
    size = (0.04, 0.04, patient.wall_thickness_mm * 1e-3)
    grid, tetrahedra, index = box_tetrahedra(cells, size)
    centroids = grid[tetrahedra].mean(axis=1)
    depth = centroids[:, 2] / size[2]
    radius = np.hypot(centroids[:, 0] - size[0] / 2, centroids[:, 1] - size[1] / 2)
    scar = (radius < 0.012) & (depth <= patient.transmurality)
    border = ~scar & (radius < 0.016)
    region = np.where(scar, REGION_SCAR, np.where(border, REGION_BORDER_ZONE, REGION_REMOTE))
    helix = np.radians(60.0 - 120.0 * depth)
    fibres = np.stack([np.cos(helix), np.sin(helix), np.zeros_like(helix)], axis=1)
    surfaces = {
        "endo": _quad_triangles(index[:, :, 0]),
        "epi": _quad_triangles(index[:, :, -1]),
        "base": _quad_triangles(index[:, -1, :]),
    }
    bz_order = np.argsort(radius)
    cell_data = {
        "region": region.astype(np.int8),
        "infarct_footprint": (radius < 0.012).astype(np.int8),
        "aha_segment": np.full(len(tetrahedra), 7, dtype=np.int64),
        "fibre_direction": fibres,
        "transmural_coordinate": depth,
        "apicobasal_coordinate": centroids[:, 1] / size[1],
    }
    for coverage, share in (
        ("scar_only", 0.0),
        ("scar_bz25", 0.25),
        ("scar_bz50", 0.5),
        ("scar_bz100", 1.0),
    ):
        bz_sorted = bz_order[border[bz_order]]
        treated = scar.copy()
        treated[bz_sorted[: round(share * len(bz_sorted))]] = True
        cell_data[treatment_field(coverage)] = treated.astype(np.int8)
    return PatientMesh(
        patient.patient_id,
        grid,
        tetrahedra,
        cell_data,
        surfaces,
        meta={"mesher": "hydraopt.testing.example_mesh"},
    )


def _quad_triangles(corners: np.ndarray) -> np.ndarray:
    """Two triangles per quad of a structured grid of node indices."""
    a, b, c, d = corners[:-1, :-1], corners[1:, :-1], corners[1:, 1:], corners[:-1, 1:]
    return np.concatenate(
        [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)]
    )


# ---- learners' inputs -------------------------------------------------------------------------

EXAMPLE_OUTPUTS = (
    OutputSpec("delta_ef_pct", "%-points", "example: change in ejection fraction"),
    OutputSpec("bz_stress_reduction_pct", "%", "example: border-zone stress reduction"),
    OutputSpec("is_optimal", "1", "example: 1 for the better half of the designs"),
)
# is_optimal's threshold on the example delta-EF: about half the example designs reach it.
EXAMPLE_OPTIMAL_DELTA_EF = 3.0
_COLUMN = {name: j for j, name in enumerate(DATASET_FEATURE_NAMES)}


def example_outcomes(features: Any) -> dict[str, Any]:
    """The example world's outcomes of rows of the 19 dataset features (NumPy or torch,
    ``[n, 19]``): delta-EF grows with the gel's thickness and the border zone it covers and
    falls off away from a 10 kPa gel; stress reduction follows. A conformance input, not a
    model of the heart."""
    thickness = features[:, _COLUMN["thickness_mm"]]
    stiffness = features[:, _COLUMN["stiffness_kpa"]]
    covered = (
        0.25 * features[:, _COLUMN["coverage_scar_bz25"]]
        + 0.5 * features[:, _COLUMN["coverage_scar_bz50"]]
        + 1.0 * features[:, _COLUMN["coverage_scar_bz100"]]
    )
    scar = features[:, _COLUMN["scar_fraction_pct"]]
    mismatch = (stiffness - 10.0) / 10.0
    delta_ef = 1.2 * thickness + 2.0 * covered + 0.05 * scar - 0.5 * mismatch * mismatch
    return {
        "delta_ef_pct": delta_ef,
        "bz_stress_reduction_pct": 4.0 * thickness + 6.0 * covered,
        "is_optimal": delta_ef >= EXAMPLE_OPTIMAL_DELTA_EF,
    }


def example_patients(n: int = 6) -> tuple[Patient, ...]:
    """``n`` variants of :func:`example_patient`, their scars from 12% to 36% of the wall."""
    base = example_patient()
    return tuple(
        replace(
            base,
            patient_id=f"EXAMPLE{i + 1:02d}",
            scar_fraction_pct=12.0 + 24.0 * i / max(1, n - 1),
            transmurality=0.4 + 0.4 * i / max(1, n - 1),
        ).validated()
        for i in range(n)
    )


def example_training_data(
    designs_per_patient: int = 24, n_patients: int = 6, seed: int = 0
) -> tuple[TrainingData, TrainingData]:
    """Training rows of the first two thirds of :func:`example_patients` and validation rows
    of the others (held-out patients, as the ``train`` stage splits), with the outputs of
    :data:`EXAMPLE_OUTPUTS` from :func:`example_outcomes`."""
    patients = example_patients(n_patients)
    parts = []
    for i, patient in enumerate(patients):
        designs = example_designs(designs_per_patient, seed=seed + i)
        inputs = SurrogateInputs.for_designs(patient, designs)
        outcomes = example_outcomes(inputs.features)
        targets = {
            spec.name: np.asarray(outcomes[spec.name], dtype=np.float64) for spec in EXAMPLE_OUTPUTS
        }
        parts.append(TrainingData(inputs, targets, EXAMPLE_OUTPUTS))
    cut = max(1, (2 * n_patients) // 3)
    return _concatenate(parts[:cut]), _concatenate(parts[cut:])


def _concatenate(parts: Sequence[TrainingData]) -> TrainingData:
    inputs = [p.inputs for p in parts]
    return TrainingData(
        SurrogateInputs(
            np.concatenate([i.features for i in inputs]),
            np.concatenate([i.polymer_index for i in inputs]),
            inputs[0].polymers,
            np.concatenate([i.patient_id for i in inputs]),
        ),
        {
            spec.name: np.concatenate([p.targets[spec.name] for p in parts])
            for spec in parts[0].specs
        },
        parts[0].specs,
    )


class ExampleEncoder:
    """A frozen polymer encoder needing no model: counts of carbon, oxygen, nitrogen and ring
    closures in the PSMILES, per repeat-unit end point."""

    embedding_dim = 4
    fingerprint = "hydraopt.testing.ExampleEncoder/1"

    def encode(self, psmiles: Sequence[str]) -> np.ndarray:
        rows = []
        for text in psmiles:
            if text.count("*") != 2 or text.count("(") != text.count(")"):
                raise ValueError(
                    f"PSMILES {text!r} is not a repeat unit: it needs two [*] end points "
                    "and balanced branches"
                )
            letters = text.replace("Cl", "X")
            rows.append(
                [
                    letters.count("C") + letters.count("c"),
                    letters.count("O") + letters.count("o"),
                    letters.count("N") + letters.count("n"),
                    sum(ch.isdigit() for ch in text) / 2,
                ]
            )
        return np.asarray(rows, dtype=np.float32).reshape(len(psmiles), self.embedding_dim)

    def trainable_module(self) -> None:
        return None


class ExampleScorer:
    """A fitted surrogate's stand-in behind the :class:`~hydraopt.plugin_types.TensorScorer`
    interface: :func:`example_outcomes` as the mean (is_optimal as a probability) with a
    fixed standard deviation, on torch tensors. For environments a policy is checked on."""

    outputs = EXAMPLE_OUTPUTS
    STD = 0.1

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cpu")

    def __call__(
        self, features: Any, polymer_index: Any, outputs: Collection[str] | None = None
    ) -> dict[str, tuple[Any, Any]]:
        import torch

        values = example_outcomes(features.float())
        wanted = outputs if outputs is not None else [s.name for s in self.outputs]
        answer = {}
        for name in wanted:
            mean = values[name].float()
            if name == "is_optimal":
                mean = torch.sigmoid(4.0 * (values["delta_ef_pct"] - EXAMPLE_OPTIMAL_DELTA_EF))
            answer[name] = (mean, torch.full_like(mean, self.STD))
        return answer

    def patient_encoding(self, patient_features: Any) -> None:
        return None


def example_environment(
    space: DesignSpace | None = None,
    n_patients: int = 4,
    episode_steps: int = 4,
    weights: Mapping[str, float] | None = None,
) -> Callable[[int], Any]:
    """``make_environment(num_envs)`` for :meth:`Policy.fit`: design environments over
    :func:`example_patients` on ``space`` (default :func:`example_space`), rewarded by
    :class:`ExampleScorer`'s predicted delta-EF (or ``weights``)."""
    from hydraopt.config import RewardConfig
    from hydraopt.design_environment import (
        DesignEnvironment,
        DesignReward,
        PatientScaling,
        patient_features,
    )

    features = patient_features(example_patients(n_patients))
    scaling = PatientScaling.of(features)
    config = RewardConfig(weights=dict(weights or {"delta_ef_pct": 1.0}))
    reward = DesignReward(space or example_space(), ExampleScorer(), config)

    def make_environment(num_envs: int) -> DesignEnvironment:
        return DesignEnvironment(reward, features, num_envs, episode_steps, scaling)

    return make_environment


def example_candidates(
    columns: Iterable[str] = (), n: int = 32, seed: int = 0, patient: Patient | None = None
) -> Any:
    """``n`` filter candidates of :func:`example_designs` with a ``reward`` column, the
    surrogate's predictions of :data:`EXAMPLE_OUTPUTS` (from :func:`example_outcomes`) and
    their standard deviations, and any other ``columns`` named, filled with seeded values."""
    from hydraopt.plugin_types import Candidates

    patient = patient or example_patient()
    designs = example_designs(n, seed=seed)
    features = SurrogateInputs.for_designs(patient, designs).features
    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = {}
    for name, predicted in example_outcomes(features).items():
        values[f"predicted_{name}"] = np.asarray(predicted, dtype=np.float64)
        values[f"predicted_{name}_std"] = np.full(n, 0.1)
    values["reward"] = values["predicted_delta_ef_pct"].copy()
    for name in columns:
        if name not in values:
            values[name] = rng.normal(3.0, 2.0, n)
    return Candidates(patient, designs, values)

"""Conformance of simulators: what the core relies on when it calls one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.domain import DesignBatch, Outcomes, Patient
from hydraopt.domain.mesh import PatientMesh
from hydraopt.plugin_types import Simulator, SimulatorPlugin
from hydraopt.testing.examples import example_designs, example_mesh, example_patient
from hydraopt.testing.processes import check_honours_timeout
from hydraopt.testing.registration import check_registration, confined


def check_simulator(
    simulator: Simulator,
    patient: Patient,
    mesh: PatientMesh,
    designs: DesignBatch,
    workdir: Path | None = None,
    batch_rtol: float = 1e-9,
) -> Outcomes:
    """A simulator declares unique outputs with units and returns exactly those, one row per
    design, deterministically; a design's result does not depend on the batch it came in
    (within ``batch_rtol``: the core splits and regroups batches freely); a design its polymer
    cannot make comes back failed with a reason. ``batch_rtol`` is relative to each output's
    largest magnitude over the designs."""
    import tempfile

    assert isinstance(simulator, Simulator), (
        "outputs or simulate(patient, mesh, designs, workdir) missing"
    )
    names = [spec.name for spec in simulator.outputs]
    assert names, "a simulator must declare at least one output"
    assert len(set(names)) == len(names), f"duplicate output names in {names}"
    for spec in simulator.outputs:
        assert spec.unit, f"output {spec.name} declares no unit (use '1' for dimensionless)"
    assert len(designs) >= 2, "check a simulator on at least two designs"
    half = len(designs) // 2
    unmakeable = _unmakeable(designs.take(np.arange(1)))
    with tempfile.TemporaryDirectory() as scratch:
        base = workdir or Path(scratch)

        def run(batch: DesignBatch, name: str) -> Outcomes:
            folder = base / name
            folder.mkdir(parents=True, exist_ok=True)
            return simulator.simulate(patient, mesh, batch, folder)

        first, second = run(designs, "first"), run(designs, "second")
        parts = [run(designs.take(np.arange(half)), "part-1")]
        parts.append(run(designs.take(np.arange(half, len(designs))), "part-2"))
        refused = run(unmakeable, "unmakeable") if unmakeable is not None else None
    assert isinstance(first, Outcomes), f"simulate returned {type(first).__name__}"
    assert list(first.names) == names, f"returned outputs {list(first.names)}, declared {names}"
    assert len(first) == len(designs), f"{len(first)} rows of outcomes for {len(designs)} designs"
    for spec in simulator.outputs:
        values = np.asarray(first[spec.name])
        expected = (len(designs), *spec.shape)
        assert values.shape == expected, f"{spec.name} has shape {values.shape}, not {expected}"
        ok = ~first.failed
        assert np.all(np.isfinite(values[ok])), f"{spec.name} has non-finite values"
        assert np.array_equal(values, second[spec.name], equal_nan=True), (
            f"{spec.name} differs between two identical calls: a simulator must be deterministic"
        )
        split = np.concatenate([part[spec.name] for part in parts])
        # Relative to the output's largest magnitude in the batch: a value near zero is not
        # held to a relative precision its scale never had.
        scale = float(np.nanmax(np.abs(values), initial=0.0)) if values.size else 0.0
        difference = float(np.nanmax(np.abs(split - values), initial=0.0)) if values.size else 0.0
        if difference > batch_rtol * scale or not np.array_equal(np.isnan(split), np.isnan(values)):
            raise AssertionError(
                f"{spec.name} of a design depends on the batch it is simulated in (largest "
                f"difference {difference:.3g}, {difference / max(scale, 1e-300):.3g} of the "
                f"output's largest magnitude, allowed {batch_rtol:.3g}); the core splits and "
                "regroups batches, so each design must get the result it would get alone"
            )
    failed = np.asarray(first.failed)
    reasons = np.asarray(first.failure_reason, dtype=object)
    assert all(str(r) for r in reasons[failed]), "a failed design has no failure_reason"
    if refused is not None:
        assert bool(refused.failed[0]) and str(refused.failure_reason[0]), (
            "a design outside its polymer's achievable ranges must come back failed with a "
            "reason (never clipped into range)"
        )
    return first


def _unmakeable(design: DesignBatch) -> DesignBatch | None:
    """The design with one property beyond its polymer's range but inside the design space's
    bounds, or None when the polymer can make every value the space allows."""
    polymer = design.space.polymers[int(design.polymer_index[0])]
    for parameter in design.space.parameters:
        achievable = getattr(polymer, parameter.name, None)
        if achievable is None:
            continue
        if achievable.high < parameter.high:
            value = min(parameter.high, achievable.high * 1.5)
        elif achievable.low > parameter.low:
            value = max(parameter.low, achievable.low / 1.5)
        else:
            continue
        columns = design.columns()
        columns[parameter.name] = np.array([value])
        return DesignBatch.from_columns(design.space, columns)
    return None


def check_simulator_plugin(
    registration: SimulatorPlugin,
    settings: Mapping[str, Any] | None = None,
    patient: Patient | None = None,
    mesh: PatientMesh | None = None,
    designs: DesignBatch | None = None,
    timeout_s: float | None = None,
    batch_rtol: float = 1e-9,
) -> Outcomes:
    """A simulator registration as hydraopt uses it: :func:`check_registration`; the factory's
    simulator passes :func:`check_simulator` on ``patient``, ``mesh`` and ``designs``
    (default: the examples of :mod:`hydraopt.testing`); ``simulate`` writes nothing outside
    its working directory (nor in the current one). With ``timeout_s`` (the evaluation task's
    timeout a pipeline would give it), the simulator is also rebuilt and run in a worker
    process, as a run does: it must finish within ``timeout_s`` with the same outcomes, and
    neither then nor when stopped half-way, as the core stops an evaluation that overruns,
    leave a process it started running."""
    assert isinstance(registration, SimulatorPlugin), (
        f"expected a SimulatorPlugin, got {type(registration).__name__}"
    )
    simulator = check_registration(registration, settings)
    patient = patient or example_patient()
    mesh = mesh or example_mesh(patient)
    designs = designs if designs is not None else example_designs()
    with confined("simulate") as workdir:
        outcomes = check_simulator(simulator, patient, mesh, designs, workdir, batch_rtol)
        if timeout_s is not None:
            validated = registration.settings.model_validate(dict(settings or {}))
            folder = workdir / "in-a-worker"
            folder.mkdir()
            label = f"simulator {registration.name!r}'s simulate"
            finished = check_honours_timeout(
                registration,
                validated,
                "simulate",
                (patient, mesh, designs, folder),
                timeout_s,
                label,
            )
            for name in outcomes.names:
                assert np.allclose(
                    finished.value[name], outcomes[name], rtol=batch_rtol, equal_nan=True
                ), f"{name} differs when the simulator is rebuilt in a worker process"
    return outcomes

"""Reference mechanics: designs per second, and screening accuracy against validation.

Measured in one run on one core (run it under ``taskset -c 0``), for the example patient on
the default mesh:

1. the screening fidelity (8 ms steps, ideal valves, one Newton step per time step, 2 beats
   per follow-up, 4 follow-ups) on random designs over the whole design space;
2. the validation fidelity (1 ms steps, smooth valves, converged wall, until the beat
   settles);
3. ``circulation``'s Regazzoni2020 with the patient's calibrated wall as its p_LV callback,
   one design at a time, 16 beats at its default 1 ms step (the beats of one screening
   design in the previous model, 4 per follow-up);

then the screening fidelity's error against validation on the same designs, as mean and
maximum absolute error and as a fraction of the output's spread (standard deviation) over
the designs: the screening error must stay well below the design signal; and the same for
delta-EF over a cohort (every third patient of the seeds' 60-patient synthetic cohort, 60
random designs each, every follow-up time), where dilated hearts settle slowest.

Usage: ``python benchmarks/bench_mechanics.py [--designs 20000] [--accuracy-designs 300]
[--cohort-patients 20]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from hydraopt.config import DesignSpaceConfig, build_design_space
from hydraopt.polymer_library import read_polymer_library
from hydraopt.testing import example_patient
from hydraopt_plugins.generators import GeneratorSettings, RandomGenerator
from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings
from hydraopt_simulators.mechanics.reference import (
    ReferenceMechanics,
    ReferenceMechanicsSettings,
)

CIRCULATION_BEATS = 16
OUTPUTS = ("delta_ef_pct", "edv_ml", "esv_ml", "edp_mmhg", "bz_stress_reduction_pct")


def circulation_designs_per_second(heart, n: int) -> float:
    """circulation's own solver with our calibrated wall as the LV, one design at a time."""
    from circulation.regazzoni2020 import Regazzoni2020

    logging.disable(logging.WARNING)
    wall = heart.wall(np.zeros(1, dtype=int), np.zeros(1), np.zeros(1), 0.0)
    timing = heart.timing
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(n):

            def p_lv(volume_ml: float, t_s: float) -> float:
                activation = float(timing.ventricles.activation(t_s, timing.period_s))
                return float(wall.pressure_mmhg(np.array([volume_ml]), activation)[0])

            model = Regazzoni2020(p_LV=p_lv, outdir=Path(scratch))
            model.solve(num_beats=CIRCULATION_BEATS, dt=1e-3)
    return n / (time.perf_counter() - start)


def rate(model: ReferenceMechanics, patient, mesh, designs) -> float:
    start = time.perf_counter()
    model.simulate(patient, mesh, designs, None)
    return len(designs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--designs", type=int, default=20_000)
    parser.add_argument("--validation-designs", type=int, default=1000)
    parser.add_argument("--circulation-designs", type=int, default=1)
    parser.add_argument("--accuracy-designs", type=int, default=300)
    parser.add_argument("--cohort-patients", type=int, default=20)
    args = parser.parse_args()

    patient = example_patient()
    mesh = EllipsoidMesher(EllipsoidMeshSettings()).build(patient)
    space = build_design_space(DesignSpaceConfig(), read_polymer_library())
    designs = RandomGenerator(GeneratorSettings()).generate(
        space, args.designs, np.random.default_rng(0)
    )
    screening = ReferenceMechanics(ReferenceMechanicsSettings())
    validation = ReferenceMechanics(ReferenceMechanicsSettings(fidelity="validation"))
    for model in (screening, validation):  # compile, and calibrate once per patient
        start = time.perf_counter()
        model.simulate(patient, mesh, designs.take(np.arange(4)), None)
        elapsed = time.perf_counter() - start
        print(f"{model.settings.fidelity}: calibration and first call {elapsed:.2f} s")
    rates = {
        "screening (8 ms, ideal valves, 2 beats x 4 follow-ups)": rate(
            screening, patient, mesh, designs
        ),
        "validation (1 ms, smooth valves, until settled)": rate(
            validation, patient, mesh, designs.take(np.arange(args.validation_designs))
        ),
        f"circulation Regazzoni2020, one design at a time ({CIRCULATION_BEATS} beats, 1 ms)": (
            circulation_designs_per_second(screening.heart(patient, mesh), args.circulation_designs)
        ),
    }
    circulation_rate = list(rates.values())[-1]
    print(f"\npatient {patient.patient_id}, {len(mesh.tetrahedra)} tetrahedra, one core")
    print(f"{'model':<66}{'designs/s':>12}{'x circulation':>15}")
    for label, value in rates.items():
        print(f"{label:<66}{value:>12,.1f}{value / circulation_rate:>15,.0f}")

    sample = designs.take(np.arange(args.accuracy_designs))
    fast, slow = (m.simulate(patient, mesh, sample, None) for m in (screening, validation))
    ok = ~fast.failed & ~slow.failed
    print(f"\nscreening vs validation fidelity on {ok.sum()} designs")
    print(
        f"{'output':<28}{'mean abs error':>16}{'max abs error':>16}{'spread (sd)':>13}"
        f"{'error / spread':>16}"
    )
    for name in OUTPUTS:
        error = np.abs(fast[name] - slow[name])[ok]
        spread = slow[name][ok].std()
        print(
            f"{name:<28}{error.mean():>16.4f}{error.max():>16.4f}{spread:>13.3f}"
            f"{error.mean() / spread:>16.3f}"
        )
    if args.cohort_patients:
        cohort_accuracy(args.cohort_patients, space)


def cohort_accuracy(n_patients: int, space) -> None:
    """Screening against validation delta-EF trajectories over part of a synthetic cohort."""
    from hydraopt.errors import DataError
    from hydraopt.seeding import rng_for
    from hydraopt.synthetic_cohort import synthetic_cohort

    seed = int(rng_for(60, "cohort", "synthetic").integers(2**63))
    patients = synthetic_cohort(60, seed, 0.5).patients[::3][:n_patients]
    mesher = EllipsoidMesher(EllipsoidMeshSettings())
    errors, values, skipped = [], [], 0
    for i, patient in enumerate(patients):
        designs = RandomGenerator(GeneratorSettings()).generate(space, 60, np.random.default_rng(i))
        mesh = mesher.build(patient)
        models = [
            ReferenceMechanics(ReferenceMechanicsSettings(fidelity=f))
            for f in ("screening", "validation")
        ]
        try:
            fast, slow = (m.simulate(patient, mesh, designs, None) for m in models)
        except DataError:
            skipped += 1
            continue
        name = "delta_ef_trajectory_pct"
        errors.append(np.abs(fast[name] - slow[name]))
        values.append(slow[name])
    error, spread = np.concatenate(errors), np.concatenate(values).std()
    print(
        f"\ncohort: {len(errors)} patients ({skipped} not represented), 60 designs each, "
        f"delta-EF at every follow-up: mean abs error {error.mean():.4f}, max {error.max():.3f}, "
        f"spread (sd) {spread:.3f}, error / spread {error.mean() / spread:.3f}"
    )


if __name__ == "__main__":
    main()

"""Reference mechanics: designs per second, against circulation's one-design-at-a-time solve.

Measured in one run on one core (run it under ``taskset -c 0``):

1. the batched model at screening fidelity (8 ms steps, 4 beats per follow-up, 4 follow-ups);
2. the batched model integrating exactly the beats circulation integrates (1 ms steps, the
   smooth valve law, 16 beats per design);
3. circulation's Regazzoni2020 with the same regional LV as its p_LV callback, one design at a
   time, 16 beats at its default 1 ms step;

and the accuracy of screening fidelity against validation fidelity on the same designs.

Usage: ``python benchmarks/bench_mechanics.py [--designs 20000] [--circulation-designs 3]``
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
from hydraopt_simulators.mechanics import closed_loop
from hydraopt_simulators.mechanics.reference import (
    ReferenceMechanics,
    ReferenceMechanicsSettings,
)
from hydraopt_simulators.mechanics.regional_lv import TissueProperties, build_regional_lv

BEATS_PER_DESIGN = 16  # 4 follow-up times x 4 beats at screening fidelity


def regional_lvs(n: int):
    weights = np.tile([0.7, 0.05, 0.05, 0.2], (n, 1))
    added = np.zeros((n, 4))
    added[:, 1] = added[:, 3] = np.linspace(0.0, 0.2, n)
    return build_regional_lv(weights, 4.0, 0.1, 50.0, TissueProperties(20.0, 1.5, 0.67), added)


def circulation_designs_per_second(n: int) -> float:
    from circulation.regazzoni2020 import Regazzoni2020

    logging.disable(logging.WARNING)
    lv = regional_lvs(n)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(n):

            def p_lv(volume, t, i=i):
                return (volume - lv.v0[i]) / lv.compliance(t)[i]

            model = Regazzoni2020(p_LV=p_lv, outdir=Path(scratch))
            model.solve(num_beats=BEATS_PER_DESIGN, dt=1e-3)
    return n / (time.perf_counter() - start)


def batched_same_beats_per_second(n: int) -> float:
    lv = regional_lvs(n)
    start = time.perf_counter()
    closed_loop.integrate_beats(lv, closed_loop.initial_state(n), BEATS_PER_DESIGN, 1e-3, "smooth")
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--designs", type=int, default=20_000)
    parser.add_argument("--circulation-designs", type=int, default=3)
    parser.add_argument("--accuracy-designs", type=int, default=300)
    args = parser.parse_args()

    patient = example_patient()
    mesh = EllipsoidMesher(EllipsoidMeshSettings()).build(patient)
    space = build_design_space(DesignSpaceConfig(), read_polymer_library())
    generator = RandomGenerator(GeneratorSettings())
    designs = generator.generate(space, args.designs, np.random.default_rng(0))
    screening = ReferenceMechanics(ReferenceMechanicsSettings())
    screening.heart(patient, mesh)  # calibration, once per patient, is not part of the rate
    start = time.perf_counter()
    screening.simulate(patient, mesh, designs, None)
    screening_rate = args.designs / (time.perf_counter() - start)

    same_beats_rate = batched_same_beats_per_second(min(args.designs, 8192))
    circulation_rate = circulation_designs_per_second(args.circulation_designs)
    print(f"patient {patient.patient_id}, {len(mesh.tetrahedra)} tetrahedra, one core")
    print(f"{'model':<62}{'designs/s':>12}{'x circulation':>15}")
    for label, rate in (
        ("hydraopt screening fidelity (8 ms, 4 beats x 4 follow-ups)", screening_rate),
        ("hydraopt batched, circulation's beats (1 ms, smooth valves, 16)", same_beats_rate),
        ("circulation Regazzoni2020, one design at a time (1 ms, 16)", circulation_rate),
    ):
        print(f"{label:<62}{rate:>12,.1f}{rate / circulation_rate:>15,.0f}")

    sample = designs.take(np.arange(args.accuracy_designs))
    validation = ReferenceMechanics(ReferenceMechanicsSettings(fidelity="validation"))
    fast, slow = (s.simulate(patient, mesh, sample, None) for s in (screening, validation))
    print(f"\nscreening vs validation fidelity on {len(sample)} designs")
    print(f"{'output':<28}{'mean abs error':>16}{'max abs error':>16}{'spread':>10}")
    for name in ("delta_ef_pct", "edv_ml", "esv_ml", "bz_stress_reduction_pct"):
        error = np.abs(fast[name] - slow[name])
        print(f"{name:<28}{error.mean():>16.4f}{error.max():>16.4f}{np.ptp(slow[name]):>10.3f}")


if __name__ == "__main__":
    main()

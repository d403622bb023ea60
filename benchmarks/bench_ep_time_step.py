"""Reference electrophysiology: the time steps against a twice finer one.

The monodomain is integrated with the reaction's step (0.1 ms) while an upstroke may be under
way and a larger step over the plateau and repolarisation (``PLATEAU_STEP_MS``). This prints,
for each pair of steps, how far activation times, repolarisation times, total activation and
the RVI move from a solution with 0.05 ms throughout, and what the beats cost: 16 designs per
patient (every coverage pattern, gel volume fractions 0.03 and 0.15, phi sigma_gel from 1e-5
to 1e-2 S/m; those whose diffusion limits the step below the largest plateau step are left
out, their number in brackets), full beats, on the 4 mm mesh.

Usage: ``python benchmarks/bench_ep_time_step.py [--patients 3] [--plateau 0.1 0.25 0.5]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hydraopt.synthetic_cohort import synthetic_cohort
from hydraopt.testing import example_patient
from hydraopt_simulators.ep.activation import heart_model
from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings
from hydraopt_simulators.ep.solver import REACTION_STEP_MS, solve_activation
from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings

REFERENCE_STEP_MS = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--plateau", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--element-size-mm", type=float, default=4.0)
    args = parser.parse_args()
    settings = ReferenceEPSettings(write_activation_maps=False)
    simulator = ReferenceEP(settings)
    patients = [example_patient()]
    if args.patients > 1:
        patients += synthetic_cohort(args.patients - 1, seed=5).patients
    every_coverage = np.repeat(np.arange(4), 4)
    every_phi = np.tile([0.03, 0.15], 8)
    every_phi_sigma = np.tile([1e-5, 1e-4, 1e-3, 1e-2], 4)
    print(
        f"{'patient':<14}{'steps ms':>12}{'max|dAT|':>10}{'max|dRT|':>10}{'p99|dRT|':>10}"
        f"{'max|dTAT|':>11}{'max|dRVI|':>11}{'beats s':>9}"
    )
    for patient in patients:
        mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=args.element_size_mm)).build(
            patient
        )
        model = heart_model(mesh, simulator.tuned(mesh), settings)
        # Designs whose diffusion allows the largest plateau step compared (a conductive gel
        # can hold the whole beat to a smaller step: nothing to compare there).
        limits = model.diffusion_steps(every_coverage, every_phi, every_phi_sigma)
        kept = limits >= max(args.plateau)
        coverage, phi, phi_sigma = every_coverage[kept], every_phi[kept], every_phi_sigma[kept]
        limit = limits[kept].min()
        runs = [(REFERENCE_STEP_MS, REFERENCE_STEP_MS)]
        runs += [(REACTION_STEP_MS, plateau) for plateau in args.plateau]
        found = {}
        for fine, plateau in runs:
            problem = model.problem(coverage, phi, phi_sigma, min(fine, limit), min(plateau, limit))
            start = time.perf_counter()
            solution = solve_activation(problem, settings.max_time_ms, repolarise=True)
            elapsed = time.perf_counter() - start
            at, rt = solution.times_ms, solution.repolarisation_ms
            found[(fine, plateau)] = (at, rt, model.measures(at, rt), elapsed)
        at0, rt0, out0, _ = found[runs[0]]
        for key, (at, rt, out, elapsed) in found.items():
            both = np.isfinite(at) & np.isfinite(at0)
            repolarised = np.isfinite(rt) & np.isfinite(rt0)
            d_at = np.abs(at[both] - at0[both])
            d_rt = np.abs(rt[repolarised] - rt0[repolarised])
            d_tat = np.abs(out["total_activation_time_ms"] - out0["total_activation_time_ms"])
            name = "reentry_vulnerability_index_ms"
            d_rvi = np.abs(out[name] - out0[name])
            print(
                f"{patient.patient_id + f' ({kept.sum()})':<14}{f'{key[0]:g}/{key[1]:g}':>12}"
                f"{d_at.max():>10.2f}{d_rt.max():>10.2f}"
                f"{np.percentile(d_rt, 99):>10.2f}{np.nanmax(d_tat):>11.2f}"
                f"{np.nanmax(d_rvi):>11.2f}{elapsed:>9.1f}"
            )


if __name__ == "__main__":
    main()

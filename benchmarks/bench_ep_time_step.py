"""Reference electrophysiology: the time steps against a converged solution.

The monodomain is integrated with the second-order Runge-Kutta-Chebyshev scheme, with steps
up to ``UPSTROKE_STEP_MS`` while an upstroke may be under way and ``PLATEAU_STEP_MS`` over the
plateau and repolarisation, and as many stages as the stiffness needs. This prints, for each
pair of largest steps, how far activation times, repolarisation times, total activation, the
border-zone velocity and the RVI move from a solution with 0.02 ms steps throughout (the same
conductivities, tuned once at the default steps), and what the beats cost: 16 designs per
patient (every coverage pattern, gel volume fractions 0.03 and 0.15, phi sigma_gel from 1e-4
to 1e-1 S/m), full beats, on the 4 mm mesh.

Usage: ``python benchmarks/bench_ep_time_step.py [--patients 3] [--steps 0.4/2 0.2/1 0.1/0.25]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hydraopt.synthetic_cohort import synthetic_cohort
from hydraopt.testing import example_patient
from hydraopt_simulators.ep.activation import heart_model
from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings
from hydraopt_simulators.ep.solver import PLATEAU_STEP_MS, UPSTROKE_STEP_MS, solve_activation
from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings

REFERENCE_STEP_MS = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument(
        "--steps",
        nargs="+",
        default=[f"{UPSTROKE_STEP_MS:g}/{PLATEAU_STEP_MS:g}", "0.4/1", "0.2/1", "0.1/0.25"],
        help="upstroke/plateau largest steps [ms]",
    )
    parser.add_argument("--element-size-mm", type=float, default=4.0)
    args = parser.parse_args()
    settings = ReferenceEPSettings(write_activation_maps=False)
    simulator = ReferenceEP(settings)
    patients = [example_patient()]
    if args.patients > 1:
        patients += synthetic_cohort(args.patients - 1, seed=5).patients
    coverage = np.repeat(np.arange(4), 4)
    phi = np.tile([0.03, 0.15], 8)
    phi_sigma = np.tile([1e-4, 1e-3, 1e-2, 1e-1], 4) * phi / 0.15
    print(
        f"{'patient':<12}{'steps ms':>10}{'max|dAT|':>10}{'p99|dAT|':>10}{'p99|dRT|':>10}"
        f"{'max|dTAT|':>11}{'max dCV %':>11}{'max|dRVI|':>11}{'beats s':>9}"
    )
    for patient in patients:
        mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=args.element_size_mm)).build(
            patient
        )
        model = heart_model(mesh, simulator.tuned(mesh), settings)
        largest = model.largest_eigenvalues(coverage, phi, phi_sigma)
        runs = [(REFERENCE_STEP_MS, REFERENCE_STEP_MS)]
        runs += [tuple(float(x) for x in pair.split("/")) for pair in args.steps]
        found = {}
        for upstroke, plateau in runs:
            problem = model.problem(coverage, phi, phi_sigma, largest, upstroke, plateau)
            start = time.perf_counter()
            solution = solve_activation(problem, settings.max_time_ms, repolarise=True)
            elapsed = time.perf_counter() - start
            at, rt = solution.times_ms, solution.repolarisation_ms
            found[(upstroke, plateau)] = (at, rt, model.measures(at, rt), elapsed)
        at0, rt0, out0, _ = found[runs[0]]
        for key, (at, rt, out, elapsed) in found.items():
            both = np.isfinite(at) & np.isfinite(at0)
            repolarised = np.isfinite(rt) & np.isfinite(rt0)
            d_at = np.abs(at[both] - at0[both])
            d_rt = np.abs(rt[repolarised] - rt0[repolarised])
            d_tat = np.abs(out["total_activation_time_ms"] - out0["total_activation_time_ms"])
            velocity = "bz_conduction_velocity_m_per_s"
            d_cv = 100 * np.abs(out[velocity] / out0[velocity] - 1)
            rvi = "reentry_vulnerability_index_ms"
            d_rvi = np.abs(out[rvi] - out0[rvi])
            print(
                f"{patient.patient_id:<12}{f'{key[0]:g}/{key[1]:g}':>10}"
                f"{d_at.max():>10.2f}{np.percentile(d_at, 99):>10.2f}"
                f"{np.percentile(d_rt, 99):>10.2f}{np.nanmax(d_tat):>11.2f}"
                f"{np.nanmax(d_cv):>11.2f}{np.nanmax(d_rvi):>11.2f}{elapsed:>9.1f}"
            )


if __name__ == "__main__":
    main()

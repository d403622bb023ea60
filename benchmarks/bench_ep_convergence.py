"""Reference electrophysiology: how its outputs change with the mesh.

The example patient (24% anteroapical infarct) meshed at 6, 4 (the default), 3, 2.5 and 2 mm;
two designs over the infarct and the whole border zone: a thin non-conductive gel (nearly
untreated) and a 2 mm gel of 0.03 S/m. Printed: every output, and the gel's effect on total
activation, per element size, with the wall-clock time of each resolution.

Usage: ``python benchmarks/bench_ep_convergence.py [--sizes 6 4 3 2.5 2]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hydraopt.config import DesignSpaceConfig, build_design_space
from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch
from hydraopt.polymer_library import read_polymer_library
from hydraopt.testing import example_patient
from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings
from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=float, nargs="+", default=[6.0, 4.0, 3.0, 2.5, 2.0])
    args = parser.parse_args()
    space = build_design_space(DesignSpaceConfig(), read_polymer_library())
    polymer = space.polymers.index("pegda-3400")
    designs = DesignBatch.from_columns(
        space,
        {
            "polymer_index": np.array([polymer, polymer]),
            "coverage_index": np.full(2, COVERAGE_PATTERNS.index("scar_bz100")),
            "stiffness_kpa": np.array([20.0, 20.0]),
            "t50_days": np.array([200.0, 200.0]),
            "conductivity_s_per_m": np.array([0.001, 0.03]),
            "thickness_mm": np.array([0.1, 2.0]),
        },
    )
    patient = example_patient()
    print("designs: (a) 0.1 mm, 0.001 S/m; (b) 2 mm, 0.03 S/m; both over scar and border zone")
    print(
        f"{'element mm':<11}{'nodes':>7}{'TAT a/b ms':>14}{'gel effect %':>14}"
        f"{'BZ CV a/b m/s':>16}{'RVI a/b ms':>14}{'time s':>8}"
    )
    for size in args.sizes:
        start = time.perf_counter()
        mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=size)).build(patient)
        out = ReferenceEP(ReferenceEPSettings(write_activation_maps=False)).simulate(
            patient, mesh, designs, None
        )
        tat = out["total_activation_time_ms"]
        cv = out["bz_conduction_velocity_m_per_s"]
        rvi = out["reentry_vulnerability_index_ms"]
        print(
            f"{size:<11g}{len(mesh.points_m):>7}{tat[0]:>7.1f}/{tat[1]:<6.1f}"
            f"{100 * (1 - tat[1] / tat[0]):>14.1f}{cv[0]:>9.3f}/{cv[1]:<6.3f}"
            f"{rvi[0]:>7.1f}/{rvi[1]:<6.1f}{time.perf_counter() - start:>8.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Reference electrophysiology: seconds per simulated beat on one core.

One design's beat (activation and repolarisation) on the example patient's LV at the former
default element size (6 mm), the default (4 mm) and a finer one (3 mm), the conductivity
tuning (once per mesh resolution) timed apart, and a batch of random designs to show the cost
per design when they integrate together.

Usage: ``python benchmarks/bench_ep.py [--batch 32]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hydraopt.config import DesignSpaceConfig, build_design_space
from hydraopt.polymer_library import read_polymer_library
from hydraopt.testing import example_patient
from hydraopt_plugins.generators import GeneratorSettings, RandomGenerator
from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings
from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    patient = example_patient()
    space = build_design_space(DesignSpaceConfig(), read_polymer_library())
    generator = RandomGenerator(GeneratorSettings())
    print(
        f"{'element size':<14}{'nodes':>7}{'tuning s':>10}{'1 beat s':>10}"
        f"{'TAT ms':>8}{'RVI ms':>8}{f'{args.batch} designs s':>16}{'s/design':>10}"
    )
    for size_mm in (6.0, 4.0, 3.0):
        mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=size_mm)).build(patient)
        ep = ReferenceEP(ReferenceEPSettings(write_activation_maps=False))
        start = time.perf_counter()
        ep.tuned(mesh)
        tuning = time.perf_counter() - start
        one = generator.generate(space, 1, np.random.default_rng(0))
        start = time.perf_counter()
        outcomes = ep.simulate(patient, mesh, one, None)
        beat = time.perf_counter() - start
        batch = generator.generate(space, args.batch, np.random.default_rng(1))
        start = time.perf_counter()
        ep.simulate(patient, mesh, batch, None)
        batch_time = time.perf_counter() - start
        print(
            f"{size_mm:<14.1f}{len(mesh.points_m):>7}{tuning:>10.2f}{beat:>10.2f}"
            f"{outcomes['total_activation_time_ms'][0]:>8.0f}"
            f"{outcomes['reentry_vulnerability_index_ms'][0]:>8.0f}{batch_time:>16.2f}"
            f"{batch_time / args.batch:>10.3f}"
        )


if __name__ == "__main__":
    main()

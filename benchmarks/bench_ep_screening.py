"""Reference electrophysiology: the screening fidelity against the monodomain (validation).

One patient's designs over the whole design space (within each polymer's ranges) on the
default 4 mm mesh: all screened, and a sample per coverage pattern, spread evenly over the
gel's conductance phi sigma_gel, solved design by design with the monodomain in the same run.
Prints the agreement the screening fidelity is held to (total activation within 2 ms or 2%,
border-zone velocity within 5%, block agreeing, RVI rank correlation >= 0.95), the curves'
cost, and the speed-up: the monodomain's seconds per design times the designs, over the
screening's seconds.

Usage: ``python benchmarks/bench_ep_screening.py [--designs 2000] [--sample 8] [--patients 1]``
"""

from __future__ import annotations

import argparse

import numpy as np

from hydraopt.config import DesignSpaceConfig, build_design_space
from hydraopt.polymer_library import read_polymer_library
from hydraopt.synthetic_cohort import synthetic_cohort
from hydraopt.testing import example_patient
from hydraopt_plugins.generators import GeneratorSettings, RandomGenerator
from hydraopt_simulators.ep.activation import design_quantities, heart_model
from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings
from hydraopt_simulators.ep.screening import agreement_with_monodomain
from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--designs", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=8, help="monodomain designs per coverage")
    parser.add_argument("--patients", type=int, default=1, help="example patient, then synthetic")
    parser.add_argument("--element-size-mm", type=float, default=4.0)
    args = parser.parse_args()
    space = build_design_space(DesignSpaceConfig(), read_polymer_library())
    generator = RandomGenerator(GeneratorSettings(within_polymer_ranges=True))
    settings = ReferenceEPSettings(fidelity="screening", write_activation_maps=False)
    simulator = ReferenceEP(settings)
    patients = [example_patient()]
    if args.patients > 1:
        patients += synthetic_cohort(args.patients - 1, seed=5).patients
    print(
        f"{'patient':<10}{'designs':>8}{'nodes':>7}{'direct':>7}{'screen s':>10}"
        f"{'mono s/design':>15}{'speed-up':>10}{'TAT ok':>8}{'BZ CV err':>11}{'block ok':>10}"
        f"{'RVI rho':>9}"
    )
    for k, patient in enumerate(patients):
        mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=args.element_size_mm)).build(
            patient
        )
        model = heart_model(mesh, simulator.tuned(mesh), settings)
        designs = generator.generate(space, args.designs, np.random.default_rng(100 + k))
        _, _, phi, phi_sigma = design_quantities(patient, designs, settings)
        agreement = agreement_with_monodomain(
            model, designs.coverage_index, phi, phi_sigma, settings, per_coverage=args.sample
        )
        screen_s = agreement.screening_s
        per_design = agreement.monodomain_s / len(agreement.coverage)
        speed_up = per_design * agreement.designs / screen_s
        print(
            f"{patient.patient_id:<10}{agreement.designs:>8}{agreement.node_solves:>7}"
            f"{agreement.direct_solves:>7}{screen_s:>10.1f}{per_design:>15.3f}{speed_up:>10.1f}"
            f"{agreement.activation_within(2.0, 0.02).mean():>8.0%}"
            f"{np.nanmax(agreement.velocity_error()):>11.2%}"
            f"{agreement.block_agrees().mean():>10.0%}{agreement.rvi_rank_correlation():>9.3f}"
        )
        worst = np.argmax(
            np.abs(
                agreement.screened["total_activation_time_ms"]
                - agreement.monodomain["total_activation_time_ms"]
            )
        )
        print(
            f"{'':<10}largest total-activation error: "
            f"{agreement.screened['total_activation_time_ms'][worst]:.2f} vs "
            f"{agreement.monodomain['total_activation_time_ms'][worst]:.2f} ms "
            f"({agreement.coverage[worst]}); activation range "
            f"{np.ptp(agreement.monodomain['total_activation_time_ms']):.1f} ms"
        )


if __name__ == "__main__":
    main()

"""FEBio against reference-mechanics on the same designs and patient mesh.

Runs the ``febio`` simulator (needs ``febio4`` on PATH, or ``--executable``) and
``reference-mechanics`` at validation fidelity on designs spanning the gel's stiffness,
thickness and coverage, for the example patient on a coarse mesh, and prints both simulators'
outputs side by side, the untreated hearts' volumes, the rank agreement of the designs' effects
and FEBio's wall time per run.

    python benchmarks/bench_febio.py [--element-size-mm 8] [--executable febio4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from hydraopt.config import DesignSpaceConfig, build_design_space
from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch
from hydraopt.polymer_library import read_polymer_library
from hydraopt.testing import example_patient
from hydraopt_simulators.febio.adapter import FEBio, FEBioSettings
from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings
from hydraopt_simulators.mechanics.reference import (
    ReferenceMechanics,
    ReferenceMechanicsSettings,
)

# (polymer, coverage, E kPa, t50 days, thickness mm): from a soft thin gel to the stiffest,
# thickest, most persistent one, over scar only and over scar and border zone.
DESIGNS = [
    ("meha", "scar_only", 8.0, 180.0, 0.5),
    ("meha", "scar_only", 43.0, 180.0, 2.0),
    ("meha", "scar_bz50", 20.0, 180.0, 1.0),
    ("meha", "scar_bz100", 43.0, 180.0, 2.0),
    ("pegda-3400", "scar_bz100", 50.0, 180.0, 2.0),
    ("pegda-3400", "scar_bz25", 10.0, 180.0, 1.0),
]
OUTPUTS = (
    "delta_ef_pct",
    "edv_ml",
    "esv_ml",
    "bz_stress_reduction_pct",
    "strain_normalization_pct",
)


def designs() -> DesignBatch:
    space = build_design_space(DesignSpaceConfig(), read_polymer_library())
    names = [p.name for p in space.polymers]
    columns = list(zip(*DESIGNS, strict=True))
    return DesignBatch.from_columns(
        space,
        {
            "polymer_index": np.array([names.index(p) for p in columns[0]]),
            "coverage_index": np.array([COVERAGE_PATTERNS.index(c) for c in columns[1]]),
            "stiffness_kpa": np.array(columns[2]),
            "t50_days": np.array(columns[3]),
            "conductivity_s_per_m": np.full(len(DESIGNS), 0.01),
            "thickness_mm": np.array(columns[4]),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--element-size-mm", type=float, default=8.0)
    parser.add_argument("--executable", default="febio4")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    patient = example_patient()
    mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=args.element_size_mm)).build(
        patient
    )
    batch = designs()
    print(
        f"patient {patient.patient_id}: EDV {patient.edv_ml} mL, ESV {patient.esv_ml} mL; mesh "
        f"{args.element_size_mm:g} mm: {len(mesh.points_m)} nodes, {len(mesh.tetrahedra)} tets"
    )
    reference = ReferenceMechanics(
        ReferenceMechanicsSettings(fidelity="validation", followup_weeks=[12.0])
    )
    started = time.perf_counter()
    ref = reference.simulate(patient, mesh, batch, None)
    ref_s = time.perf_counter() - started
    febio = FEBio(FEBioSettings(executable=args.executable, followup_weeks=[12.0]))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_febio_"))
    started = time.perf_counter()
    fe = febio.simulate(patient, mesh, batch, workdir)
    fe_s = time.perf_counter() - started
    unloading = workdir / "unloading.json"
    iterations = json.loads(unloading.read_text())["iterations"] if unloading.is_file() else 0
    runs = iterations + 1 + int((~fe.failed).sum())
    report = reference.heart(patient, mesh).report()
    print(
        f"untreated (reference-mechanics, calibrated): EDV {report['edv_ml']:.1f} mL, "
        f"ESV {report['esv_ml']:.1f} mL, EF {report['ef_pct']:.1f}%; FEBio loads: EDP "
        f"{report['edp_mmhg']:.1f} mmHg, ESP {report['esp_mmhg']:.1f} mmHg"
    )
    written = workdir / "untreated.json"
    if written.is_file():
        untreated = json.loads(written.read_text())["weeks_after_injection"]["12"]
        print(
            f"untreated (FEBio): EDV {untreated['edv_ml']:.1f} mL, ESV "
            f"{untreated['esv_ml']:.1f} mL, EF {untreated['ef_pct']:.1f}%"
        )
    header = f"{'design':44s}" + "".join(f"{name:>28s}" for name in OUTPUTS)
    print(header)
    print(f"{'':44s}" + "".join(f"{'reference / febio':>28s}" for _ in OUTPUTS))
    for row, (polymer, coverage, modulus, t50, thickness) in enumerate(DESIGNS):
        label = f"{polymer} {coverage} {modulus:g} kPa {t50:g} d {thickness:g} mm"
        cells = "".join(f"{ref[name][row]:>13.2f} / {fe[name][row]:<12.2f}" for name in OUTPUTS)
        print(f"{label:44s}{cells}")
        if fe.failed[row]:
            print(f"   febio failed: {fe.failure_reason[row]}")
    ok = ~fe.failed & ~ref.failed
    for name in ("delta_ef_pct", "bz_stress_reduction_pct"):
        if ok.sum() >= 3:
            rho = spearmanr(ref[name][ok], fe[name][ok]).statistic
            print(f"rank correlation of {name} over {ok.sum()} designs: {rho:.2f}")
    print(
        f"wall time: reference-mechanics {ref_s:.1f} s for {len(DESIGNS)} designs; FEBio "
        f"{fe_s:.1f} s for {runs} runs ({iterations} unloading, 1 untreated, the designs'; "
        f"{fe_s / runs:.1f} s per run); files in {workdir}"
    )


if __name__ == "__main__":
    main()

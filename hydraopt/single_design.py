"""One design on one patient, outside a run: what ``hydraopt simulate`` does."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.config import Pipeline, build_design_space
from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch, Outcomes
from hydraopt.errors import HydraoptError
from hydraopt.inputs import load_cohort, load_library
from hydraopt.plugin_calls import call_plugin, checked_mesh, checked_outcomes
from hydraopt.registry import PluginRegistry


@dataclass(frozen=True)
class SingleDesignResult:
    description: str
    outcomes: dict[str, Outcomes]


def simulate_one(
    pipeline: Pipeline,
    registry: PluginRegistry,
    patient_id: str,
    simulator_names: tuple[str, ...],
    output_dir: Path | None,
    design: dict[str, Any],
) -> SingleDesignResult:
    """Build the patient's mesh and run the pipeline's simulators on one design."""
    config = pipeline.config
    patient = load_cohort(pipeline).get(patient_id)
    library = load_library(pipeline)
    space = build_design_space(config.design_space, library)
    if design["coverage"] not in space.coverages:
        raise HydraoptError(
            f"coverage {design['coverage']!r} is not allowed by the pipeline's "
            f"design_space.coverage_patterns {list(space.coverages)}"
        )
    designs = DesignBatch.from_columns(
        space,
        {
            "polymer_index": np.array([library.index(design["polymer"])]),
            "coverage_index": np.array([COVERAGE_PATTERNS.index(design["coverage"])]),
            **{
                name: np.array([float(design[name])])
                for name in ("stiffness_kpa", "t50_days", "conductivity_s_per_m", "thickness_mm")
            },
        },
    )
    outside = [name for name, mask in designs.out_of_bounds().items() if mask[0]]
    if outside:
        raise HydraoptError(f"{', '.join(outside)} outside the pipeline's design_space bounds")
    names = simulator_names or tuple(config.simulators)
    if not names:
        raise HydraoptError(f"{pipeline.path}: no [simulators.NAME] table; nothing to simulate")
    unknown = [n for n in names if n not in config.simulators]
    if unknown:
        raise HydraoptError(
            f"--simulator {unknown[0]}: not configured in {pipeline.path} "
            f"(configured: {', '.join(config.simulators)})"
        )
    mesher = registry.handle("mesher", config.mesh.plugin, pipeline.plugin_settings[("mesh",)])
    with tempfile.TemporaryDirectory() as scratch:
        mesh = checked_mesh(mesher, call_plugin(mesher, "build", patient, Path(scratch)), patient)
    outcomes = {}
    for name in names:
        simulator = registry.handle(
            "simulator", name, pipeline.plugin_settings[("simulators", name)]
        )
        with tempfile.TemporaryDirectory() as scratch:
            workdir = output_dir / name if output_dir else Path(scratch)
            workdir.mkdir(parents=True, exist_ok=True)
            result = call_plugin(simulator, "simulate", patient, mesh, designs, workdir)
            outcomes[name] = checked_outcomes(
                simulator, result, len(designs), simulator.build().outputs
            )
    return SingleDesignResult(designs.describe(0), outcomes)

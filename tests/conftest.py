"""Shared fixtures: pipeline files, and third-party plugin distributions made on the fly."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

QUICK_PIPELINE = """\
[study]
name = "t"
seed = 7
output_dir = "runs"

[cohort]
source = "synthetic"
n_patients = 3

[dataset]
designs_per_patient = 16
generator = { plugin = "sobol" }

[execution]
workers = 1
"""


def run_quietly(path: Path, registry, **options):
    """Run the pipeline file at ``path`` without output; return its RunSummary."""
    from hydraopt.config import load_pipeline
    from hydraopt.pipeline import run_pipeline
    from hydraopt.progress import Reporter

    return run_pipeline(load_pipeline(path, registry), registry, Reporter(quiet=True), **options)


def designs_of(run_dir: Path) -> dict:
    """Each patient's stored designs, by patient id."""
    from hydraopt.store import RunStore

    designs = RunStore(run_dir).shards("designs")
    return {pid: designs.table(pid, "designs") for pid in designs.meta["patients"]}


@pytest.fixture
def write_pipeline(tmp_path: Path):
    """Write a pipeline file into tmp_path and return its path."""

    def write(text: str = QUICK_PIPELINE, name: str = "pipeline.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def install_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Create a real installed distribution (a module plus its ``.dist-info`` with an
    ``entry_points.txt`` in the ``hydraopt`` group) in a folder on sys.path."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def install(
        package: str, version: str, module: str, source: str, entry_name: str = "plugin"
    ) -> None:
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = site / f"{package.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n", encoding="utf-8"
        )
        (info / "entry_points.txt").write_text(
            f"[hydraopt]\n{entry_name} = {module}\n", encoding="utf-8"
        )
        created.append(module)
        importlib.invalidate_caches()

    yield install
    for module in created:
        sys.modules.pop(module, None)


@pytest.fixture(scope="session")
def patient():
    from hydraopt.testing import example_patient

    return example_patient()


@pytest.fixture(scope="session")
def lv_mesh(patient):
    """The example patient's LV at the default (screening) resolution, built once."""
    from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings

    return EllipsoidMesher(EllipsoidMeshSettings()).build(patient)


@pytest.fixture(scope="session")
def library():
    from hydraopt.polymer_library import read_polymer_library

    return read_polymer_library()


@pytest.fixture(scope="session")
def space(library):
    from hydraopt.config import DesignSpaceConfig, build_design_space

    return build_design_space(DesignSpaceConfig(), library)


@pytest.fixture
def make_designs(space):
    """Designs from explicit columns: polymer names, coverage names and numbers."""
    import numpy as np

    from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch

    def make(polymer, coverage, stiffness_kpa, t50_days, conductivity_s_per_m, thickness_mm):
        columns = {
            "stiffness_kpa": stiffness_kpa,
            "t50_days": t50_days,
            "conductivity_s_per_m": conductivity_s_per_m,
            "thickness_mm": thickness_mm,
        }
        n = max(np.size(v) for v in (polymer, coverage, *columns.values()))
        names = np.broadcast_to(np.asarray(polymer), n)
        coverages = np.broadcast_to(np.asarray(coverage), n)
        return DesignBatch.from_columns(
            space,
            {
                "polymer_index": np.array([space.polymers.index(p) for p in names]),
                "coverage_index": np.array([COVERAGE_PATTERNS.index(c) for c in coverages]),
                **{
                    k: np.broadcast_to(np.asarray(v, dtype=float), n).copy()
                    for k, v in columns.items()
                },
            },
        )

    return make

"""The ``reference-ep`` simulator: one beat of the infarcted LV with a hydrogel in place.

Monodomain Mitchell-Schaeffer on the patient's mesh (:mod:`.solver`), excited by the fast
endocardial layer (:mod:`.purkinje`), with tissue conductivities tuned to the target
velocities at the mesh's resolution and the gel's physical conductivity corrected by the same
factors (:mod:`.tissue`, :mod:`.activation`); scar conducts nothing and carries no ionic
current. The beat runs until every node has repolarised, for the re-entry vulnerability
index. See docs/physics.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from hydraopt import hookimpl
from hydraopt.domain import DesignBatch, Outcomes, OutputSpec, Patient
from hydraopt.domain.mesh import PatientMesh, mean_edge_length_m
from hydraopt.plugin_types import PluginSettings, SimulatorPlugin

# 2.1: conductivities interpolated between tuned 0.1 mm nodes of edge length. 2.2: the
# screening fidelity (monodomain curves over the design, :mod:`.screening`); the time loop
# compiled (same arithmetic). 2.3: a beat ends at quiescence; the plateau's step 0.25 ms;
# designs of every coverage integrated together, curves refined per phi.
VERSION = "2.6"


class ReferenceEPSettings(PluginSettings):
    fidelity: Literal["screening", "validation"] = Field(
        "validation",
        description="'validation': the monodomain beat of every design; 'screening': the "
        "monodomain solved along each coverage pattern's curve over the gel's conductance and "
        "interpolated between (exact where few designs make curves not worth it; docs/physics.md).",
    )
    fibre_velocity_m_per_s: float = Field(
        0.6, gt=0, description="Target conduction velocity along fibres in healthy tissue."
    )
    cross_velocity_m_per_s: float = Field(
        0.3, gt=0, description="Target conduction velocity across fibres in healthy tissue."
    )
    bz_fibre_velocity_m_per_s: float = Field(
        0.3,
        gt=0,
        description="Target border-zone velocity along fibres (a quarter of the "
        "healthy conductivity: half the velocity).",
    )
    bz_cross_velocity_m_per_s: float = Field(
        0.1,
        gt=0,
        description="Target border-zone velocity across fibres (90% less "
        "conductivity, Arevalo et al. 2016: about a third of the velocity).",
    )
    earliest_activation_aha_segments: list[int] = Field(
        default_factory=lambda: [2, 9, 15],
        min_length=1,
        description="AHA segments of the earliest endocardial activation sites (Durrer et al. "
        "1970: high anterior paraseptal, mid septal, low posterior paraseptal).",
    )
    fast_layer_velocity_m_per_s: float = Field(
        4.2,
        gt=0,
        description="Velocity of the fast endocardial (Purkinje) layer: seven times the "
        "healthy fibre velocity (Rodero et al. 2021).",
    )
    fast_layer_extent: float = Field(
        0.7,
        ge=0,
        le=1,
        description="How far from apex to base the fast layer reaches (Rodero et al. 2021).",
    )
    rvi_radius_mm: float = Field(
        10.0, gt=0, description="Search radius of the re-entry vulnerability index."
    )
    evaluation_weeks: float = Field(
        1.0, ge=0, description="Weeks after injection at which the gel's state is taken."
    )
    max_time_ms: float = Field(
        600.0, gt=0, description="Longest simulated time (activation and repolarisation)."
    )
    write_activation_maps: bool = Field(
        True,
        description="Write activation- and repolarisation-time fields (XDMF) into the work "
        "directory (validation fidelity: screening interpolates outputs, not fields).",
    )

    @field_validator("earliest_activation_aha_segments")
    @classmethod
    def _endocardial_segments(cls, segments: list[int]) -> list[int]:
        # Segment 17 is the apical cap beyond the end of the cavity (Cerqueira et al. 2002):
        # it has no endocardium for the fast layer to excite.
        bad = [s for s in segments if not 1 <= s <= 16]
        if bad:
            raise ValueError(
                f"AHA segments {bad} have no endocardium: earliest activation sites must be "
                "in segments 1-16 (17 is the apical cap beyond the cavity)"
            )
        return segments


class ReferenceEP:
    """Monodomain activation for a batch of designs on one patient's mesh."""

    def __init__(self, settings: ReferenceEPSettings) -> None:
        self.settings = settings
        self.outputs = (
            OutputSpec(
                "total_activation_time_ms",
                "ms",
                "time by which 99% of the activated myocardium has activated",
            ),
            OutputSpec(
                "bz_conduction_velocity_m_per_s",
                "m/s",
                "median local conduction velocity in the border zone",
            ),
            OutputSpec(
                "conduction_block_pct", "%", "share of excitable myocardium that never activates"
            ),
            OutputSpec(
                "reentry_vulnerability_index_ms",
                "ms",
                "re-entry vulnerability index of the most vulnerable 5% of the myocardium: "
                "repolarisation minus neighbouring activation (lower: more vulnerable)",
            ),
        )
        self._tuned: dict[float, object] = {}

    def tuned(self, mesh: PatientMesh):
        """Conductivities for this mesh's resolution, from the tuned grid nodes around it
        (tuned once per node and kept for every later patient)."""
        from hydraopt_simulators.ep.tissue import interpolated, tune, tuning_nodes

        edge = mean_edge_length_m(mesh.points_m, mesh.tetrahedra)
        s = self.settings
        targets = {
            "remote_fibre": s.fibre_velocity_m_per_s,
            "remote_cross": s.cross_velocity_m_per_s,
            "bz_fibre": s.bz_fibre_velocity_m_per_s,
            "bz_cross": s.bz_cross_velocity_m_per_s,
        }
        nodes = tuning_nodes(edge)
        for node in nodes:
            if node not in self._tuned:
                self._tuned[node] = tune(node, targets)
        return interpolated(edge, self._tuned[nodes[0]], self._tuned[nodes[1]])

    def simulate(
        self, patient: Patient, mesh: PatientMesh, designs: DesignBatch, workdir: Path | None
    ) -> Outcomes:
        from hydraopt_simulators.ep.activation import evaluate_designs

        values, failed, reasons, maps = evaluate_designs(
            patient, mesh, designs, self.tuned(mesh), self.settings
        )
        if workdir is not None and self.settings.write_activation_maps and maps:
            from hydraopt.mesh_io import write_xdmf

            write_xdmf(
                mesh,
                Path(workdir) / "activation.xdmf",
                point_data={
                    f"{name}_design_{row:05d}": field[:, row]
                    for name, field in maps.items()
                    for row in range(len(designs))
                },
            )
        return Outcomes(self.outputs, values, failed, reasons)


@hookimpl
def hydraopt_simulators() -> Iterator[SimulatorPlugin]:
    yield SimulatorPlugin(
        name="reference-ep",
        factory=ReferenceEP,
        settings=ReferenceEPSettings,
        description="monodomain Mitchell-Schaeffer beat on the patient mesh with a fast "
        "endocardial layer (P1, scipy)",
        version=VERSION,
    )

"""The ``reference-ep`` simulator: activation of the infarcted LV with a hydrogel in place.

Per element, the tissue's conductivity tensor is sigma_t I + (sigma_f - sigma_t) f f^T with
sigma_f, sigma_t tuned to the target velocities at the mesh's resolution (:mod:`.tissue`).
Scar conducts nothing and its nodes carry no ionic current; the border zone keeps a fraction
of the along- and across-fibre conductivities (remodelled gap junctions). In a treated
element the gel occupies the volume fraction phi = h_gel / (h + h_gel) (in-vivo thickness
after swelling and degradation, :mod:`hydraopt_simulators.hydrogel`) and conducts in parallel
with the tissue (Wiener's upper bound for layers along the current):

    sigma_eff = (1 - phi) sigma_tissue + phi sigma_gel I

so a conductive gel over scar carries electrotonic current across it. See docs/physics.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from hydraopt import hookimpl
from hydraopt.domain import DesignBatch, Outcomes, OutputSpec, Patient
from hydraopt.domain.mesh import PatientMesh, mean_edge_length_m
from hydraopt.plugin_types import PluginSettings, SimulatorPlugin

VERSION = "1.0"


class ReferenceEPSettings(PluginSettings):
    fibre_velocity_m_per_s: float = Field(
        0.6, gt=0, description="Target conduction velocity along fibres in healthy tissue."
    )
    cross_velocity_m_per_s: float = Field(
        0.3, gt=0, description="Target conduction velocity across fibres in healthy tissue."
    )
    bz_fibre_velocity_m_per_s: float = Field(
        0.3, gt=0, description="Target border-zone velocity along fibres (a quarter of the "
        "healthy conductivity: half the velocity)."
    )
    bz_cross_velocity_m_per_s: float = Field(
        0.1, gt=0, description="Target border-zone velocity across fibres (90% less "
        "conductivity, Arevalo et al. 2016: about a third of the velocity)."
    )
    stimulus_aha_segments: list[int] = Field(
        default_factory=lambda: [17],
        min_length=1,
        description="AHA segments whose endocardium is stimulated (17: the apex).",
    )
    evaluation_weeks: float = Field(
        1.0, ge=0, description="Weeks after injection at which the gel's state is taken."
    )
    max_time_ms: float = Field(500.0, gt=0, description="Longest simulated time.")
    write_activation_maps: bool = Field(
        True, description="Write activation-time fields (XDMF) into the work directory."
    )


class ReferenceEP:
    """Monodomain activation for a batch of designs on one patient's mesh."""

    def __init__(self, settings: ReferenceEPSettings) -> None:
        self.settings = settings
        self.outputs = (
            OutputSpec(
                "total_activation_time_ms",
                "ms",
                "time from the stimulus to the last activated myocardium",
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
                "arrhythmia_risk_score",
                "1",
                "mean of BZ conduction slowing, BZ block and BZ velocity dispersion",
            ),
        )
        self._tuned: dict[float, object] = {}

    def tuned(self, mesh: PatientMesh):
        from hydraopt_simulators.ep.tissue import tune

        edge = round(mean_edge_length_m(mesh.points_m, mesh.tetrahedra), 5)
        if edge not in self._tuned:
            s = self.settings
            self._tuned[edge] = tune(edge, {
                "remote_fibre": s.fibre_velocity_m_per_s,
                "remote_cross": s.cross_velocity_m_per_s,
                "bz_fibre": s.bz_fibre_velocity_m_per_s,
                "bz_cross": s.bz_cross_velocity_m_per_s,
            })
        return self._tuned[edge]

    def simulate(
        self, patient: Patient, mesh: PatientMesh, designs: DesignBatch, workdir: Path | None
    ) -> Outcomes:
        from hydraopt_simulators.ep.activation import evaluate_designs

        values, failed, reasons, maps = evaluate_designs(
            patient, mesh, designs, self.tuned(mesh), self.settings
        )
        if workdir is not None and self.settings.write_activation_maps and len(designs):
            from hydraopt.mesh_io import write_xdmf

            write_xdmf(
                mesh,
                Path(workdir) / "activation.xdmf",
                point_data={
                    f"activation_time_ms_design_{row:05d}": maps[:, row]
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
        description="monodomain Mitchell-Schaeffer activation on the patient mesh (P1, scipy)",
        version=VERSION,
    )

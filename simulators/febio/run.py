"""One FEBio run: write the model, run ``febio4``, judge how it ended, read the heart's state.

FEBio says success twice: its exit status (0) and the banner ``N O R M A L   T E R M I N A T
I O N`` at the end of its log. Both are required; an ``E R R O R   T E R M I N A T I O N``
(a negative Jacobian, a diverging Newton iteration, an input error) or a run that stops
without a banner is an ``error-termination`` failure with the log's last lines. FEBio is run
without ``-silent``, which would hide the input errors that explain a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hydraopt.domain.mesh import PatientMesh
from hydraopt_simulators.external import EvaluationFailure, resolve_executable, run_program
from hydraopt_simulators.febio.feb_file import (
    ED_TIME,
    ELEMENT_DATA_FILE,
    ELEMENT_VARIABLES,
    ES_TIME,
    NODE_DATA_FILE,
    NODE_VARIABLES,
    LVModel,
    write_feb,
)
from hydraopt_simulators.febio.logfile import LogfileError, read_data_file, record_at, termination
from hydraopt_simulators.febio.lv_model import (
    M_TO_MM,
    HeartState,
    Loading,
    heart_state,
    lv_model,
)

if TYPE_CHECKING:
    from hydraopt_simulators.febio.adapter import FEBioSettings

FEB_NAME = "model.feb"
LOG_NAME = "febio.log"


def run_febio(
    mesh: PatientMesh,
    treated: np.ndarray | None,
    gel_ratio: float,
    gel_modulus_kpa: float,
    infarct_stiffness_ratio: float,
    loading: Loading,
    folder: Path,
    settings: FEBioSettings,
    reference_points_m: np.ndarray | None = None,
) -> HeartState:
    """The heart's state at end-diastole and end-systole from one FEBio run in ``folder``
    (created; its files are kept). Raises :class:`EvaluationFailure`."""
    model = lv_model(
        mesh,
        treated,
        gel_ratio,
        gel_modulus_kpa,
        infarct_stiffness_ratio,
        loading,
        settings.steps_per_phase,
        reference_points_m,
    )
    nodes, elements = run_model(model, folder, settings)
    state = heart_state(mesh, model, nodes, elements)
    if not (np.isfinite(state.edv_ml) and np.isfinite(state.esv_ml) and state.esv_ml > 0):
        raise EvaluationFailure(
            "malformed-output", "FEBio's displacements give no valid cavity volumes"
        )
    if settings.write_fields:
        write_fields(mesh, model, state, folder / "fields.xdmf")
    return state


def run_model(
    model: LVModel, folder: Path, settings: FEBioSettings
) -> tuple[dict[float, np.ndarray], dict[float, np.ndarray]]:
    """Write ``model`` into ``folder``, run FEBio there and read back the nodal
    displacements and element values at end-diastole (and end-systole unless the model stops
    at filling). Raises :class:`EvaluationFailure`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_feb(model, folder / FEB_NAME)
    # -noconfig: the run does not depend on a febio.xml found on the machine.
    argv = [
        *settings.launcher,
        resolve_executable(settings.executable),
        *("-i", FEB_NAME, "-noconfig"),
        *settings.extra_arguments,
    ]
    run = run_program(argv, folder, settings.run_timeout_s, LOG_NAME)
    ended = termination(run.log_text())
    if ended == "error" or run.returncode != 0:
        raise EvaluationFailure(
            "error-termination",
            f"FEBio ended in error (exit status {run.returncode})",
            run.excerpt(),
        )
    if ended is None:
        raise EvaluationFailure(
            "error-termination", "FEBio's log has no termination banner", run.excerpt()
        )
    times = (ED_TIME,) if model.filling_only else (ED_TIME, ES_TIME)
    try:
        nodes = _values_at(folder / NODE_DATA_FILE, NODE_VARIABLES, len(model.points_mm), times)
        elements = _values_at(
            folder / ELEMENT_DATA_FILE, ELEMENT_VARIABLES, len(model.tetrahedra), times
        )
    except FileNotFoundError as exc:
        raise EvaluationFailure(
            "missing-output", f"FEBio wrote no {Path(exc.filename).name}", run.excerpt()
        ) from None
    except LogfileError as exc:
        raise EvaluationFailure("malformed-output", str(exc), run.excerpt()) from None
    return nodes, elements


def _values_at(
    path: Path, variables: tuple[str, ...], n_items: int, times: tuple[float, ...]
) -> dict[float, np.ndarray]:
    records = read_data_file(path)
    if records[-1].variables != variables:
        raise LogfileError(
            f"{path.name}: holds {';'.join(records[-1].variables)}, expected {';'.join(variables)}"
        )
    return {time: record_at(records, time, n_items, path.name) for time in times}


def write_fields(mesh: PatientMesh, model: LVModel, state: HeartState, path: Path) -> None:
    """Displacement (end-diastole, end-systole) and the end-systolic myocyte fibre stress, as
    an XDMF time series over the model's unloaded geometry, both in metres as the patient's
    mesh is (ParaView's "Warp By Vector" of the displacement at scale 1 shows the loaded
    heart; the time is the model's 1 and 2)."""
    from hydraopt.mesh_io import write_xdmf_time_series

    cells = {"region": np.asarray(mesh.cell_data["region"])}
    write_xdmf_time_series(
        model.points_mm / M_TO_MM,
        mesh.tetrahedra,
        path,
        [
            (ED_TIME, {"displacement_m": state.displacement_ed_mm / M_TO_MM}, {}),
            (
                ES_TIME,
                {"displacement_m": state.displacement_es_mm / M_TO_MM},
                {"myocyte_fibre_stress_kpa": state.fibre_stress_es_kpa},
            ),
        ],
        cell_data=cells,
    )

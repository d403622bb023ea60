"""The openCARP parameter file (``.par``) of one design's beat, mapped from the reference model.

What carries over from ``reference-ep`` (docs/physics.md 3), and how:

- **Monodomain** (``bidomain = 0``). openCARP's monodomain conductivity is the harmonic mean
  g_i g_e / (g_i + g_e) of the intra- and extracellular ones it is given
  (``bidm_eqv_mono = 1``); both are set to twice the reference's monodomain sigma, so the
  mean is exactly sigma.
- **Conductivities**: one ``gregion`` per element tag (:mod:`.files`: region + 3 * treated),
  transversely isotropic about the fibre (``g_in = g_it``). Tissue gets the reference's
  tuned values; a treated element the reference's mixing rule
  sigma_eff = (1 - phi) sigma_tissue + phi sigma_gel c, c the mesh's correction factor per
  direction, which stays transversely isotropic about the same fibre. The reference's scar
  conducts nothing; openCARP needs a positive conductivity, so every value is at least
  :data:`CONDUCTIVITY_FLOOR_S_PER_M`.
- **Ionic model**: ``MitchellSchaeffer`` with the reference's parameters outside scar;
  scar is ``PASSIVE`` (no excitable current) with a tenth of the membrane per volume, as the
  reference gives it a tenth of the capacitance. openCARP's Mitchell-Schaeffer runs on the
  -86.2 to 40 mV scale (Gillette et al., Med Image Anal 2021;71:102080): the normalised
  potential v is V = V_min + v (V_max - V_min).
- **Stimulus**: the reference excites every fast-layer node at its own time; openCARP has no
  per-node delay, so the nodes are grouped into bins one stimulus duration (2 ms) wide, each
  bin one transmembrane-current stimulus starting at the time it is centred on: every node is
  stimulated within 1 ms of its own time. The strength is the reference's 0.5/ms of the
  normalised potential on openCARP's scale (63.1 uA/cm^2 with C_m = 1 uF/cm^2).
- **Activation and repolarisation**: two ``lats`` detectors on V_m, the first crossing of
  v = 0.5 rising (-23.1 mV) and of v = V_gate = 0.13 falling (-69.8 mV), as the reference
  detects them; openCARP writes -1 for a node that never crossed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hydraopt.atomic import atomic_path
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_NAMES, REGION_REMOTE, REGION_SCAR
from hydraopt_simulators.ep.activation import SCAR_CAPACITANCE_FRACTION
from hydraopt_simulators.ep.solver import (
    ACTIVATION_THRESHOLD,
    BETA_PER_M,
    MEMBRANE_CAPACITANCE_F_PER_M2,
    STIMULUS_DURATION_MS,
    STIMULUS_STRENGTH_PER_MS,
    TAU_CLOSE_MS,
    TAU_IN_MS,
    TAU_OPEN_MS,
    TAU_OUT_MS,
    V_GATE,
)
from hydraopt_simulators.ep.tissue import TunedConductivity
from hydraopt_simulators.opencarp.files import ELEMENT_TAGS, TREATED_TAG_OFFSET

# openCARP's Mitchell-Schaeffer maps the normalised potential onto this range (mV).
V_MIN_MV = -86.2
V_MAX_MV = 40.0
V_RANGE_MV = V_MAX_MV - V_MIN_MV
ACTIVATION_THRESHOLD_MV = V_MIN_MV + ACTIVATION_THRESHOLD * V_RANGE_MV
REPOLARISATION_THRESHOLD_MV = V_MIN_MV + V_GATE * V_RANGE_MV
# 1 F/m^2 = 100 uF/cm^2; 1 /m = 1e-6 /um.
MEMBRANE_CAPACITANCE_UF_PER_CM2 = MEMBRANE_CAPACITANCE_F_PER_M2 * 100.0
SURFACE_TO_VOLUME_PER_UM = BETA_PER_M * 1e-6
# The reference's stimulus, d v/dt = 0.5/ms, as a transmembrane current density.
STIMULUS_STRENGTH_UA_PER_CM2 = (
    STIMULUS_STRENGTH_PER_MS * V_RANGE_MV * MEMBRANE_CAPACITANCE_UF_PER_CM2
)
# Where the reference conducts nothing (scar without gel), openCARP still needs a positive
# conductivity: a millionth of a siemens per metre is about five orders of magnitude below the
# border zone's across-fibre value, so no current worth the name flows (assumed floor).
CONDUCTIVITY_FLOOR_S_PER_M = 1e-6
IONIC_MODEL = "MitchellSchaeffer"
PASSIVE_MODEL = "PASSIVE"
IONIC_PARAMETERS = (
    f"tau_in={TAU_IN_MS:g},tau_out={TAU_OUT_MS:g},tau_open={TAU_OPEN_MS:g},"
    f"tau_close={TAU_CLOSE_MS:g},V_gate={V_GATE:g}"
)
ACTIVATION_ID = "ACTs"
REPOLARISATION_ID = "REPs"
SIMULATION_ID = "out"
CONSOLE_INTERVAL_MS = 10.0  # timedt: how often openCARP reports progress in its log
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.+\-/]+$")


@dataclass(frozen=True)
class Stimulus:
    """Nodes stimulated together from ``start_ms`` for one stimulus duration."""

    start_ms: float
    nodes: np.ndarray


def stimulus_groups(
    onset_ms: np.ndarray, duration_ms: float = STIMULUS_DURATION_MS
) -> list[Stimulus]:
    """The stimulated nodes (finite ``onset_ms``) in bins ``duration_ms`` wide, centred on
    the earliest onset plus whole durations: each node within half a duration of its own
    onset."""
    onset_ms = np.asarray(onset_ms, dtype=float)
    nodes = np.flatnonzero(np.isfinite(onset_ms))
    if not len(nodes):
        return []
    earliest = float(onset_ms[nodes].min())
    bins = np.rint((onset_ms[nodes] - earliest) / duration_ms).astype(int)
    return [
        Stimulus(earliest + k * duration_ms, nodes[bins == k]) for k in np.unique(bins).tolist()
    ]


def tissue_conductivities_s_per_m(tuned: TunedConductivity) -> dict[int, tuple[float, float]]:
    """Region -> (along, across) fibre conductivity of the tissue, as the reference's
    :func:`~hydraopt_simulators.ep.activation.heart_model` assigns them (scar: none)."""
    return {
        REGION_REMOTE: (tuned["remote_fibre"], tuned["remote_cross"]),
        REGION_BORDER_ZONE: (tuned["bz_fibre"], tuned["bz_cross"]),
        REGION_SCAR: (0.0, 0.0),
    }


def tag_conductivities_s_per_m(
    tuned: TunedConductivity, phi: float, phi_sigma_s_per_m: float
) -> np.ndarray:
    """[tag, (along, across)] monodomain conductivities of one design: the tissue's where
    untreated, the mixing rule where treated (gel volume fraction ``phi``, ``phi`` times the
    gel's physical conductivity ``phi_sigma_s_per_m``), floored."""
    tissue = tissue_conductivities_s_per_m(tuned)
    gel = phi_sigma_s_per_m * np.array([tuned.correction("fibre"), tuned.correction("cross")])
    values = np.empty((len(ELEMENT_TAGS), 2))
    for region in REGION_NAMES:
        own = np.array(tissue[region])
        values[region] = own
        values[region + TREATED_TAG_OFFSET] = (1.0 - phi) * own + gel
    return np.maximum(values, CONDUCTIVITY_FLOOR_S_PER_M)


def simulation_parameters(
    mesh_name: str,
    conductivities_s_per_m: np.ndarray,
    stimuli: Sequence[tuple[str, float]],
    tend_ms: float,
    dt_us: float,
    spacedt_ms: float,
) -> dict[str, object]:
    """The parameters of one beat, in file order: the mesh ``mesh_name`` (a base name), the
    per-tag conductivities of :func:`tag_conductivities_s_per_m` and ``stimuli`` as
    (vertex file base name, start) pairs."""
    parameters: dict[str, object] = {
        "meshname": mesh_name,
        "simID": SIMULATION_ID,
        "bidomain": 0,
        "bidm_eqv_mono": 1,
        "parab_solve": 1,  # Crank-Nicolson: a gel's high conductivity sets no step limit
        "tend": tend_ms,
        "dt": dt_us,
        "spacedt": spacedt_ms,
        "timedt": CONSOLE_INTERVAL_MS,
    }
    parameters |= _ionic_regions()
    parameters |= _conductivity_regions(conductivities_s_per_m)
    parameters |= _stimuli(stimuli)
    parameters |= _detectors()
    return parameters


def _ionic_regions() -> dict[str, object]:
    scar_tags = [REGION_SCAR, REGION_SCAR + TREATED_TAG_OFFSET]
    excitable_tags = [tag for tag in ELEMENT_TAGS if tag not in scar_tags]
    regions = [
        ("myocardium", IONIC_MODEL, IONIC_PARAMETERS, excitable_tags, 1.0),
        ("scar", PASSIVE_MODEL, None, scar_tags, SCAR_CAPACITANCE_FRACTION),
    ]
    parameters: dict[str, object] = {"num_imp_regions": len(regions)}
    for k, (name, model, model_parameters, tags, membrane_fraction) in enumerate(regions):
        parameters[f"imp_region[{k}].name"] = name
        parameters[f"imp_region[{k}].im"] = model
        if model_parameters:
            parameters[f"imp_region[{k}].im_param"] = model_parameters
        parameters[f"imp_region[{k}].cellSurfVolRatio"] = (
            membrane_fraction * SURFACE_TO_VOLUME_PER_UM
        )
        parameters[f"imp_region[{k}].num_IDs"] = len(tags)
        for i, tag in enumerate(tags):
            parameters[f"imp_region[{k}].ID[{i}]"] = tag
    return parameters


def _conductivity_regions(conductivities_s_per_m: np.ndarray) -> dict[str, object]:
    parameters: dict[str, object] = {"num_gregions": len(ELEMENT_TAGS)}
    for tag in ELEMENT_TAGS:
        # Intra- and extracellular both twice the monodomain value: their harmonic mean,
        # openCARP's monodomain conductivity, is then exactly that value.
        along, across = (2.0 * float(v) for v in conductivities_s_per_m[tag])
        region = f"gregion[{tag}]"
        parameters |= {
            f"{region}.num_IDs": 1,
            f"{region}.ID[0]": tag,
            f"{region}.g_il": along,
            f"{region}.g_it": across,
            f"{region}.g_in": across,
            f"{region}.g_el": along,
            f"{region}.g_et": across,
            f"{region}.g_en": across,
        }
    return parameters


def _stimuli(stimuli: Sequence[tuple[str, float]]) -> dict[str, object]:
    parameters: dict[str, object] = {"num_stim": len(stimuli)}
    for k, (vertex_file, start_ms) in enumerate(stimuli):
        parameters |= {
            f"stim[{k}].crct.type": 0,  # transmembrane current
            f"stim[{k}].elec.vtx_file": vertex_file,
            f"stim[{k}].ptcl.start": start_ms,
            f"stim[{k}].ptcl.duration": STIMULUS_DURATION_MS,
            f"stim[{k}].ptcl.npls": 1,
            f"stim[{k}].pulse.strength": STIMULUS_STRENGTH_UA_PER_CM2,
        }
    return parameters


def _detectors() -> dict[str, object]:
    parameters: dict[str, object] = {"num_LATs": 2}
    detectors = [
        (ACTIVATION_ID, 0, ACTIVATION_THRESHOLD_MV),
        (REPOLARISATION_ID, 1, REPOLARISATION_THRESHOLD_MV),
    ]
    for k, (event_id, mode, threshold_mv) in enumerate(detectors):
        parameters |= {
            f"lats[{k}].ID": event_id,
            f"lats[{k}].measurand": 0,  # V_m
            f"lats[{k}].all": 0,  # the first crossing only
            f"lats[{k}].mode": mode,  # 0 rising, 1 falling
            f"lats[{k}].threshold": threshold_mv,
        }
    return parameters


def format_parameters(parameters: Mapping[str, object]) -> str:
    """``key = value`` lines; strings other than plain names and paths are quoted."""
    lines = []
    for key, value in parameters.items():
        if isinstance(value, float):
            text = f"{value:.12g}"  # 12 digits: exact enough, and 0.14 reads as 0.14
        elif isinstance(value, str) and not _PLAIN_VALUE.match(value):
            text = f'"{value}"'
        else:
            text = str(value)
        lines.append(f"{key} = {text}\n")
    return "".join(lines)


def write_parameter_file(path: Path, parameters: Mapping[str, object]) -> None:
    with atomic_path(Path(path)) as temporary:
        temporary.write_text(format_parameters(parameters))


def read_parameter_file(path: Path) -> dict[str, str]:
    """Every ``key = value`` of a parameter file, quotes and ``#`` comments removed."""
    path = Path(path)
    parameters: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path.name} line {number}: expected 'key = value', got {raw!r}")
        parameters[key.strip()] = value.strip().strip('"')
    return parameters

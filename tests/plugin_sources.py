"""Source code of third-party plugin modules that tests install as distributions."""

KEEP_BEST_FILTER = """
import numpy as np
from pydantic import Field
from hydraopt import hookimpl
from hydraopt.plugin_types import FilterPlugin, PluginSettings, Selection


class KeepBestSettings(PluginSettings):
    column: str = Field("predicted_delta_ef_pct")
    fraction: float = Field(0.1, gt=0, le=1)


class KeepBest:
    def __init__(self, settings):
        self.settings = settings
        self.reads = (settings.column,)

    def select(self, candidates, context):
        values = candidates[self.settings.column]
        count = int(np.ceil(self.settings.fraction * len(candidates)))
        return Selection(np.argsort(-values, kind="stable")[:count])


@hookimpl
def hydraopt_filters():
    return [FilterPlugin(name="keep-best", factory=KeepBest, settings=KeepBestSettings,
                         description="keep the best fraction")]
"""

# One small plugin of every remaining kind, as a third party would ship them.
EVERY_KIND = '''
from collections import Counter
import re

import numpy as np
from pydantic import Field

from hydraopt import hookimpl
from hydraopt.domain import Outcomes, OutputSpec, Predictions
from hydraopt.domain.training import DATASET_FEATURE_NAMES
from hydraopt.plugin_types import (
    EncoderPlugin, MesherPlugin, NoSettings, PluginSettings, PolicyPlugin, SimulatorPlugin,
    SurrogatePlugin,
)
from hydraopt.testing import example_mesh


class SlabMesher:
    def __init__(self, settings):
        self.settings = settings

    def build(self, patient, workdir=None):
        return example_mesh(patient)


class LaplaceSettings(PluginSettings):
    systolic_pressure_mmhg: float = Field(110.0, gt=0)


class LaplaceWallStress:
    """Mean wall stress of a thick-walled sphere, with the patch thickening the wall."""

    outputs = (OutputSpec("wall_stress_kpa", "kPa", "Laplace wall stress"),)

    def __init__(self, settings):
        self.settings = settings

    def simulate(self, patient, mesh, designs, workdir):
        pressure_kpa = self.settings.systolic_pressure_mmhg * 0.1333
        radius_mm = (3 * patient.esv_ml * 1000 / (4 * np.pi)) ** (1 / 3)
        wall_mm = patient.wall_thickness_mm + designs.thickness_mm
        stress = pressure_kpa * radius_mm / (2 * wall_mm * (1 + wall_mm / (2 * radius_mm)))
        # A design its polymer cannot make is failed with the reason, never clipped.
        failed = np.logical_or.reduce(list(designs.outside_polymer_range().values()))
        reasons = np.where(failed, "outside its polymer's achievable ranges", "").astype(object)
        stress = np.where(failed, np.nan, stress)
        return Outcomes(self.outputs, {"wall_stress_kpa": stress}, failed, reasons)


class AtomCountEncoder:
    embedding_dim = 4
    fingerprint = "atom-count-1"

    def __init__(self, settings):
        self.settings = settings

    def encode(self, psmiles):
        counts = [Counter(re.findall(r"Cl|Br|[CNOS]", s)) for s in psmiles]
        return np.array([[c["C"], c["N"], c["O"], c["S"]] for c in counts], dtype=np.float32)

    def trainable_module(self):
        return None


class ThicknessSurrogate:
    """Wall stress as a + b / (wall + patch thickness), fitted by least squares; the spread
    of the training residuals is its uncertainty."""

    outputs = (OutputSpec("wall_stress_kpa", "kPa", "predicted wall stress"),)

    def __init__(self, settings):
        self.settings = settings
        self.coefficients, self.residual_kpa = np.array([0.0, 300.0]), 0.0

    def _features(self, inputs):
        wall = DATASET_FEATURE_NAMES.index("wall_thickness_mm")
        patch = DATASET_FEATURE_NAMES.index("thickness_mm")
        wall_mm = inputs.features[:, wall] + inputs.features[:, patch]
        return np.stack([np.ones(len(inputs)), 1 / wall_mm], axis=1)

    def fit(self, train, validation, encoder, workdir, seed=0, report=None):
        x = self._features(train.inputs)
        y = train.targets["wall_stress_kpa"]
        self.coefficients = np.linalg.lstsq(x, y, rcond=None)[0]
        self.residual_kpa = float(np.std(y - x @ self.coefficients))
        predicted = self.predict(validation.inputs)["wall_stress_kpa"]
        held_out = np.abs(predicted - validation.targets["wall_stress_kpa"]).mean()
        return {"validation_mae_kpa": float(held_out)}

    def save(self, directory):
        np.save(directory / "coefficients.npy", [*self.coefficients, self.residual_kpa])

    def load(self, directory, encoder):
        *coefficients, self.residual_kpa = np.load(directory / "coefficients.npy").tolist()
        self.coefficients = np.array(coefficients)

    def predict(self, inputs):
        mean = self._features(inputs) @ self.coefficients
        return Predictions(
            Outcomes(self.outputs, {"wall_stress_kpa": mean}),
            {"wall_stress_kpa": np.full(len(inputs), self.residual_kpa)},
        )


class ThickestPolicy:
    """Learns nothing: the first polymer and coverage, mid-range, always the thickest patch."""

    def __init__(self, settings):
        self.settings = settings

    def fit(self, make_environment, workdir, seed=0, report=None):
        make_environment(2)  # the environment builds; nothing to learn
        return {"updates": 0.0}

    def act(self, observations, deterministic=False):
        import torch

        from hydraopt.design_environment import DesignAction

        n = len(observations)
        unit = torch.full((n, 4), 0.5)
        unit[:, 3] = 1.0
        zeros = torch.zeros(n, dtype=torch.long)
        return DesignAction(zeros, zeros, unit)

    def save(self, directory):
        (directory / "thickest.txt").write_text("thickest")

    def load(self, directory, environment):
        if not (directory / "thickest.txt").exists():
            raise ValueError(f"{directory}: not a saved thickest policy")


@hookimpl
def hydraopt_meshers():
    yield MesherPlugin(name="slab", factory=SlabMesher, settings=NoSettings,
                       description="a slab of wall, for tests")


@hookimpl
def hydraopt_simulators():
    yield SimulatorPlugin(name="laplace-wall-stress", factory=LaplaceWallStress,
                          settings=LaplaceSettings, description="thick-walled sphere",
                          version="2.0")


@hookimpl
def hydraopt_encoders():
    yield EncoderPlugin(name="atom-count", factory=AtomCountEncoder, settings=NoSettings,
                        description="counts of C, N, O, S atoms")


@hookimpl
def hydraopt_surrogates():
    yield SurrogatePlugin(name="thickness-surrogate", factory=ThicknessSurrogate,
                          settings=NoSettings, description="stress falls with thickness")


@hookimpl
def hydraopt_policies():
    yield PolicyPlugin(name="thickest", factory=ThickestPolicy, settings=NoSettings,
                       description="always the thickest patch")
'''

# A simulator that misbehaves on purpose, one way per setting, for the core's guards. It logs
# every factory call and every unit it runs (with its process id) to files under `log_dir`.
MISBEHAVING = """
import os
import signal
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from hydraopt import hookimpl
from hydraopt.domain import Outcomes, OutputSpec
from hydraopt.plugin_types import SimulatorPlugin, PluginSettings


class Settings(PluginSettings):
    behaviour: Literal[
        "ok", "too-few-rows", "nan-unflagged", "dict", "raise", "hang", "die", "die-once",
        "raise-in-factory",
    ] = "ok"
    only_patient: str = Field("", description="Misbehave for this patient only ('' for all).")
    log_dir: str = ""
    offset_kpa: float = 0.0
    tags: list[str] = Field(default_factory=lambda: ["a list makes the settings unhashable"])


class Misbehaving:
    outputs = (OutputSpec("wall_stress_kpa", "kPa", "a number"),)

    def __init__(self, settings):
        if settings.behaviour == "raise-in-factory":
            raise RuntimeError("no licence for this solver")
        self.settings = settings
        self._log("factory", "")

    def _log(self, what, patient_id):
        if self.settings.log_dir:
            with open(Path(self.settings.log_dir) / what, "a") as handle:
                handle.write(f"{os.getpid()} {patient_id}\\n")

    def simulate(self, patient, mesh, designs, workdir):
        self._log("units", patient.patient_id)
        n = len(designs)
        values = 30.0 / (1 + designs.thickness_mm) + self.settings.offset_kpa
        behaviour = self.settings.behaviour
        if self.settings.only_patient not in ("", patient.patient_id):
            behaviour = "ok"
        if behaviour == "too-few-rows":
            return Outcomes(self.outputs, {"wall_stress_kpa": values[:-1]})
        if behaviour == "nan-unflagged":
            return Outcomes(self.outputs, {"wall_stress_kpa": np.full(n, np.nan)})
        if behaviour == "dict":
            return {"wall_stress_kpa": values}
        if behaviour == "raise":
            raise RuntimeError("the solver diverged")
        if behaviour == "hang":
            Path(self.settings.log_dir, f"pid-{os.getpid()}").write_text("")
            time.sleep(600)
        if behaviour == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if behaviour == "die-once":
            marker = Path(self.settings.log_dir) / f"died-{patient.patient_id}"
            if not marker.exists():
                marker.write_text("")
                os.kill(os.getpid(), signal.SIGKILL)
        return Outcomes(self.outputs, {"wall_stress_kpa": values})


@hookimpl
def hydraopt_simulators():
    yield SimulatorPlugin(name="misbehaving", factory=Misbehaving, settings=Settings,
                          description="misbehaves on purpose", version="1.0")
"""

# A second package registering a generator under a built-in's name: a clash.
OTHER_SOBOL = """
from hydraopt import hookimpl
from hydraopt.plugin_types import GeneratorPlugin, NoSettings

class Mine:
    def __init__(self, settings): ...
    def generate(self, space, n, rng): ...

@hookimpl
def hydraopt_generators():
    yield GeneratorPlugin(name="sobol", factory=Mine, settings=NoSettings, description="x")
"""

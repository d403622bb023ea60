"""Source code of third-party plugin modules that tests install as distributions."""

KEEP_BEST_FILTER = """
import numpy as np
from pydantic import Field
from hydraopt import hookimpl
from hydraopt.plugin_types import FilterPlugin, PluginSettings


class KeepBestSettings(PluginSettings):
    output: str = Field("delta_ef_pct")
    fraction: float = Field(0.1, gt=0, le=1)


class KeepBest:
    def __init__(self, settings):
        self.settings = settings

    def select(self, designs, predictions):
        values = predictions[self.settings.output]
        return values >= np.quantile(values, 1 - self.settings.fraction)


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
from hydraopt.domain import Outcomes, OutputSpec
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
        return Outcomes(self.outputs, {"wall_stress_kpa": stress})


class AtomCountEncoder:
    embedding_dim = 4

    def __init__(self, settings):
        self.settings = settings

    def encode(self, psmiles):
        counts = [Counter(re.findall(r"Cl|Br|[CNOS]", s)) for s in psmiles]
        return np.array([[c["C"], c["N"], c["O"], c["S"]] for c in counts], dtype=np.float32)


class ThicknessSurrogate:
    outputs = (OutputSpec("wall_stress_kpa", "kPa", "predicted wall stress"),)

    def __init__(self, settings):
        self.settings = settings

    def predict(self, patient, designs):
        return Outcomes(self.outputs, {"wall_stress_kpa": 30.0 / (1 + designs.thickness_mm)})


class ThickestPolicy:
    def __init__(self, settings):
        self.settings = settings
        self.space = None

    def propose(self, patient, n, rng):
        unit = rng.random((n, 4))
        unit[:, 3] = 1.0  # always the thickest patch
        return self.space.designs_from_unit(np.zeros(n, int), np.zeros(n, int), unit)


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

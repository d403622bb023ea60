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

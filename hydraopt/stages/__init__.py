"""The pipeline's stages, one module each, each defining ``STAGE``.

:func:`discover_stages` imports every module of this package (``base`` holds the contract)
and collects their stages: a new stage is a new file, and nothing else is edited.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from hydraopt.stages.base import Stage

CONTRACT_MODULE = "base"


@cache
def discover_stages() -> tuple[Stage, ...]:
    """Every stage of this package, sorted by name (the runner orders them)."""
    stages = []
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name == CONTRACT_MODULE:
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        stage = getattr(module, "STAGE", None)
        if not isinstance(stage, Stage):
            raise RuntimeError(f"stage module {module.__name__} defines no STAGE")
        if stage.name != module_info.name:
            raise RuntimeError(f"stage module {module.__name__} defines stage {stage.name!r}")
        stages.append(stage)
    return tuple(sorted(stages, key=lambda s: s.name))

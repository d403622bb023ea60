"""Building plugins and calling them, guarded by the core.

A :class:`PluginHandle` is what crosses process boundaries: the plugin's registration and its
validated settings, both picklable by reference. Each process builds the plugin object from
its handle once and keeps it (:meth:`PluginHandle.build`), so per-instance caches (a
simulator's calibrated hearts, the electrophysiology's conductivity tuning) serve every unit
that process runs. Plugin objects themselves never need to pickle. A registration that cannot
be pickled (its factory a lambda or a closure) is refused with an error naming the plugin.

Every call into a plugin goes through a guard that checks what came back, as pymoo's
``Problem.evaluate`` does: the right type, one row per design, the declared names and shapes,
NaN only where the plugin set ``failed``. A plugin that raises, or returns something else, is
a :class:`PluginFailure` naming the plugin and its package; the unit it ran in fails, and the
run says so.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from hydraopt.domain import DesignBatch, DesignSpace, Outcomes, OutputSpec, Patient, Predictions
from hydraopt.domain.mesh import PatientMesh
from hydraopt.errors import PluginError
from hydraopt.plugin_types import (
    PLUGIN_INTERFACES,
    PluginRegistration,
    PluginSettings,
    RegisteredPlugin,
)


class PluginFailure(PluginError):
    """A plugin raised or broke its contract. ``plugin_label`` names it and its package."""

    def __init__(self, plugin_label: str, message: str) -> None:
        self.plugin_label = plugin_label
        super().__init__(f"{plugin_label}: {message}")


@dataclass(frozen=True)
class PluginHandle:
    """A plugin as configured: registration, providing package and validated settings."""

    plugin: RegisteredPlugin
    settings: PluginSettings

    @property
    def registration(self) -> PluginRegistration:
        return self.plugin.registration

    @property
    def kind(self) -> str:
        return self.plugin.kind

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def version(self) -> str:
        return self.plugin.version

    @property
    def label(self) -> str:
        source = f"{self.plugin.package} {self.plugin.package_version}"
        return f"{self.kind} plugin {self.name!r} ({source})"

    @cached_property
    def settings_json(self) -> str:
        return self.settings.model_dump_json()

    def identity(self) -> dict[str, str]:
        """Everything about the plugin that can change its results: name, package, version,
        settings (hashed) and the digest of its code. Stage fingerprints and the evaluation
        cache both key on it."""
        from hydraopt.code_digest import plugin_code_digest
        from hydraopt.config import stable_hash

        factory_module = getattr(self.registration.factory, "__module__", None) or ""
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "package": self.plugin.package,
            "settings": stable_hash(self.settings.model_dump(mode="json")),
            "code": plugin_code_digest(factory_module) if factory_module else "",
        }

    def build(self) -> Any:
        """The plugin object, built once per process from registration and settings."""
        key = (self.kind, self.name, self.plugin.package, type(self.settings).__qualname__)
        key += (self.settings_json,)
        if key not in _BUILT:
            _BUILT[key] = self.build_new()
        return _BUILT[key]

    def build_new(self) -> Any:
        """A new plugin object, checked to implement its kind's interface."""
        try:
            instance = self.registration.factory(self.settings)
        except Exception as exc:
            raise PluginFailure(
                self.label, f"its factory raised {type(exc).__name__}: {exc}"
            ) from exc
        interface = PLUGIN_INTERFACES[self.kind]
        if not isinstance(instance, interface):
            raise PluginFailure(
                self.label,
                f"its factory built {type(instance).__name__}, which does not implement "
                f"hydraopt's {interface.__name__} interface",
            )
        return instance

    def check_picklable(self) -> None:
        """Refuse a handle that cannot reach a worker process, naming the plugin."""
        try:
            pickle.dumps(self)
        except Exception as exc:
            raise PluginError(
                f"{self.label} cannot be sent to worker processes ({type(exc).__name__}: "
                f"{exc}). Worker processes rebuild each plugin from its registration, so its "
                "factory and settings model must be importable by name: define them at module "
                "level (not as a lambda or inside a function), or set execution.workers = 1"
            ) from None


_BUILT: dict[tuple[str, ...], Any] = {}


def forget_built_plugins() -> None:
    """Drop this process's plugin objects (the end of a run in the driver)."""
    _BUILT.clear()


def call_plugin(handle: PluginHandle, method: str, *args: Any) -> Any:
    """``handle.build().method(*args)``, a raised exception turned into a PluginFailure."""
    instance = handle.build()
    function: Callable[..., Any] = getattr(instance, method)
    try:
        return function(*args)
    except Exception as exc:
        raise PluginFailure(handle.label, f"{method} raised {type(exc).__name__}: {exc}") from exc


# ---- what comes back -------------------------------------------------------------------------


def checked_outcomes(
    handle: PluginHandle, result: Any, n_designs: int, declared: tuple[OutputSpec, ...]
) -> Outcomes:
    """``result`` if it is a valid answer for ``n_designs`` designs, else a PluginFailure."""
    if not isinstance(result, Outcomes):
        raise PluginFailure(handle.label, f"returned a {type(result).__name__}, not Outcomes")
    problems = _outcome_problems(result, n_designs, declared)
    if problems:
        raise PluginFailure(handle.label, "; ".join(problems))
    return result


def _outcome_problems(result: Outcomes, n: int, declared: tuple[OutputSpec, ...]) -> list[str]:
    names = [s.name for s in declared]
    if list(result.names) != names:
        return [f"returned outputs {list(result.names)}, but declares {names}"]
    if len(result) != n:
        return [f"returned {len(result)} rows for {n} designs"]
    failed = np.asarray(result.failed)
    if failed.dtype != bool or failed.shape != (n,):
        return [f"failed must be {n} booleans, got dtype {failed.dtype} shape {failed.shape}"]
    problems = []
    reasons = np.asarray(result.failure_reason, dtype=object)
    unexplained = np.flatnonzero(failed & np.array([not str(r) for r in reasons], dtype=bool))
    if len(unexplained):
        problems.append(f"{len(unexplained)} failed designs have no failure_reason")
    for spec in declared:
        values = np.asarray(result[spec.name])
        if values.shape != (n, *spec.shape):
            problems.append(f"{spec.name} has shape {values.shape}, expected {(n, *spec.shape)}")
            continue
        if values.dtype.kind not in "fiub":
            problems.append(f"{spec.name} is not numeric (dtype {values.dtype})")
            continue
        finite = np.isfinite(values.astype(float)).reshape(n, -1).all(axis=1)
        bad = np.flatnonzero(~finite & ~failed)
        if len(bad):
            rows = ", ".join(str(r) for r in bad[:5]) + (", ..." if len(bad) > 5 else "")
            problems.append(
                f"{spec.name} is NaN or infinite for {len(bad)} designs not marked failed "
                f"(rows {rows})"
            )
    return problems


def checked_designs(handle: PluginHandle, result: Any, space: DesignSpace, n: int) -> DesignBatch:
    """``n`` designs of ``space``, every value within its bounds and allowed patterns."""
    if not isinstance(result, DesignBatch):
        raise PluginFailure(handle.label, f"returned a {type(result).__name__}, not DesignBatch")
    if len(result) != n:
        raise PluginFailure(handle.label, f"returned {len(result)} designs, not {n}")
    outside = [name for name, mask in result.out_of_bounds().items() if mask.any()]
    if outside:
        raise PluginFailure(handle.label, f"returned designs outside the design space in {outside}")
    allowed = set(space.coverage_indices.tolist())
    if not set(result.coverage_index.tolist()) <= allowed:
        raise PluginFailure(handle.label, "returned a coverage pattern the design space excludes")
    return result


def checked_mesh(handle: PluginHandle, result: Any, patient: Patient) -> PatientMesh:
    if not isinstance(result, PatientMesh):
        raise PluginFailure(handle.label, f"returned a {type(result).__name__}, not PatientMesh")
    if result.patient_id != patient.patient_id:
        raise PluginFailure(
            handle.label,
            f"returned the mesh of {result.patient_id!r} for patient {patient.patient_id!r}",
        )
    if not np.all(np.isfinite(result.points_m)):
        raise PluginFailure(handle.label, "returned a mesh with non-finite points")
    return result


def checked_predictions(
    handle: PluginHandle, result: Any, n_designs: int, declared: tuple[OutputSpec, ...]
) -> Predictions:
    """A surrogate's answer: valid outcomes, and a finite, non-negative standard deviation
    wherever the prediction is not marked failed."""
    if not isinstance(result, Predictions):
        raise PluginFailure(handle.label, f"returned a {type(result).__name__}, not Predictions")
    checked_outcomes(handle, result.mean, n_designs, declared)
    ok = ~np.asarray(result.mean.failed)
    for spec in declared:
        std = np.asarray(result.std[spec.name], dtype=float)[ok]
        if not (np.all(np.isfinite(std)) and np.all(std >= 0)):
            raise PluginFailure(
                handle.label,
                f"the standard deviation of {spec.name} must be finite and non-negative where "
                "the prediction is not marked failed",
            )
    return result


def checked_mask(handle: PluginHandle, result: Any, n_designs: int) -> np.ndarray:
    """A filter's answer: one boolean per candidate."""
    mask = np.asarray(result) if isinstance(result, np.ndarray | list | tuple) else None
    if mask is None or mask.dtype != bool or mask.shape != (n_designs,):
        what = (
            f"dtype {mask.dtype} shape {mask.shape}" if mask is not None else type(result).__name__
        )
        raise PluginFailure(
            handle.label, f"must return {n_designs} booleans, one per candidate, got {what}"
        )
    return mask

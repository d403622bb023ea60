"""The plugin registry: entry-point discovery, typed registrations, lookup by kind and name.

Built-in plugins and third-party ones are found the same way, through the entry-point group
``hydraopt``; the core keeps no list of built-ins. A third-party entry point that fails to
import is recorded and skipped (reported by ``hydraopt plugins``), and becomes fatal only if a
pipeline asks for a plugin that is then missing. A hook implementation whose name hydraopt
does not define is an error (a misspelled hook would otherwise leave its plugins silently
missing). Two distributions registering one name are a clash: both are listed (``hydraopt
plugins`` shows them), and only what uses that name fails, with an error naming both
packages.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from hydraopt import hookspecs
from hydraopt.errors import PluginError
from hydraopt.plugin_calls import PluginHandle
from hydraopt.plugin_types import (
    PLUGIN_KINDS,
    PluginSettings,
    RegisteredPlugin,
    hooks_mismatch,
)

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
TRACE_VARIABLE = "HYDRAOPT_TRACE_PLUGINS"
# Importing a plugin's entry point and calling its registration hooks should take moments; one
# that hangs (a licence server, a network share) is given this long, then reported as broken
# with its package while discovery goes on without it.
DEADLINE_VARIABLE = "HYDRAOPT_PLUGIN_DEADLINE_S"
DEFAULT_DEADLINE_S = 30.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point or hook that could not be used, and why."""

    entry_point: str
    package: str
    error: str


@dataclass(frozen=True)
class _Source:
    """Where a registered pluggy plugin came from."""

    package: str
    version: str


class PluginRegistry:
    """All plugins found, by kind and name."""

    def __init__(self, plugins: Iterable[RegisteredPlugin], broken: Iterable[BrokenPlugin] = ()):
        self._by_kind: dict[str, dict[str, RegisteredPlugin]] = {k: {} for k in PLUGIN_KINDS}
        # (kind, name) -> every registration claiming it, when more than one package does.
        self.clashes: dict[tuple[str, str], list[RegisteredPlugin]] = {}
        for plugin in plugins:
            key = (plugin.kind, plugin.name)
            if key in self.clashes:
                self.clashes[key].append(plugin)
            elif plugin.name in self._by_kind[plugin.kind]:
                self.clashes[key] = [self._by_kind[plugin.kind].pop(plugin.name), plugin]
            else:
                self._by_kind[plugin.kind][plugin.name] = plugin
        self.broken: tuple[BrokenPlugin, ...] = tuple(broken)

    @classmethod
    def discover(cls, extra: Mapping[str, object] | None = None) -> PluginRegistry:
        """Load every ``hydraopt`` entry point (and ``extra`` plugin objects, keyed by a
        package label, for scripts and tests) and collect their registrations."""
        deadline_s = _deadline_s()
        manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        manager.add_hookspecs(hookspecs)
        sources: dict[str, _Source] = {}
        broken: list[BrokenPlugin] = []
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist
            package = dist.name if dist else "?"
            version = dist.version if dist else "?"
            label = f"{entry_point.name} = {entry_point.value}"
            try:
                plugin = _within_deadline(entry_point.load, deadline_s, f"loading {label}")
            except Exception as exc:  # a broken third-party package must not stop hydraopt
                log.warning("skipping plugin entry point %s of %s: %s", label, package, exc)
                broken.append(BrokenPlugin(label, package, f"{type(exc).__name__}: {exc}"))
                continue
            _register(
                manager, plugin, f"{package}:{entry_point.name}", sources, _Source(package, version)
            )
        for label, plugin in (extra or {}).items():
            _register(manager, plugin, label, sources, _Source(label, "local"))
        _refuse_unknown_hooks(manager, sources)
        registered, hook_errors = _collect(manager, sources, deadline_s)
        return cls(registered, [*broken, *hook_errors])

    def __iter__(self) -> Iterator[RegisteredPlugin]:
        """Every registration, by kind and name, clashing ones included (each of them)."""
        for kind in PLUGIN_KINDS:
            found = [*self._by_kind[kind].values()]
            found += [p for (k, _), clash in self.clashes.items() if k == kind for p in clash]
            yield from sorted(found, key=lambda p: (p.name, p.package))

    def names(self, kind: str) -> tuple[str, ...]:
        clashing = {name for k, name in self.clashes if k == _check_kind(kind)}
        return tuple(sorted({*self._by_kind[kind], *clashing}))

    def clash_message(self, kind: str, name: str) -> str:
        claims = " and ".join(
            f"package {p.package} {p.package_version}" for p in self.clashes[(kind, name)]
        )
        return (
            f"{kind} plugin {name!r} is registered by more than one package: {claims}; "
            "uninstall all but one of them"
        )

    def get(self, kind: str, name: str) -> RegisteredPlugin:
        """The plugin of ``kind`` called ``name``, or an error listing what exists (or, when
        several packages claim the name, naming them)."""
        plugins = self._by_kind[_check_kind(kind)]
        if name in plugins:
            return plugins[name]
        if (kind, name) in self.clashes:
            raise PluginError(self.clash_message(kind, name))
        available = list(self.names(kind))
        message = f"no {kind} plugin named {name!r}"
        close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
        message += f"; did you mean {close[0]!r}?" if close else "."
        message += f" Available {kind} plugins: {', '.join(available) or 'none installed'}."
        if self.broken:
            message += " These plugin entry points failed to load and may provide it: " + "; ".join(
                f"{b.entry_point} ({b.package}: {b.error})" for b in self.broken
            )
        raise PluginError(message)

    def validate_settings(self, kind: str, name: str, raw: Mapping[str, Any]) -> PluginSettings:
        """The plugin's settings model built from ``raw``; raises pydantic's ValidationError."""
        return self.get(kind, name).registration.settings.model_validate(dict(raw))

    def handle(self, kind: str, name: str, settings: PluginSettings) -> PluginHandle:
        """The plugin with its settings, ready to build in this process or a worker."""
        return PluginHandle(self.get(kind, name), settings)

    def create(self, kind: str, name: str, settings: PluginSettings) -> Any:
        """A new plugin object, checked to implement its kind's interface; a factory that
        raises is a :class:`~hydraopt.plugin_calls.PluginFailure` naming the plugin."""
        return self.handle(kind, name, settings).build_new()


def _check_kind(kind: str) -> str:
    if kind not in PLUGIN_KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; kinds are {', '.join(PLUGIN_KINDS)}")
    return kind


def _register(
    manager: pluggy.PluginManager,
    plugin: object,
    name: str,
    sources: dict[str, _Source],
    source: _Source,
) -> None:
    if manager.is_registered(plugin):  # the same module behind two entry points
        return
    manager.register(plugin, name=name)
    sources[name] = source


def _refuse_unknown_hooks(manager: pluggy.PluginManager, sources: Mapping[str, _Source]) -> None:
    """A hook implementation hydraopt does not define (a typo such as ``hydraopt_simulator``)
    is an error naming the package and the closest real hook. A plugin that supports several
    hydraopt versions marks hooks newer than this one ``@hookimpl(optionalhook=True)``."""
    problems = []
    known = [hook for hook, _ in PLUGIN_KINDS.values()]
    for hook_name, caller in sorted(vars(manager.hook).items()):
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            close = difflib.get_close_matches(hook_name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            source = sources.get(impl.plugin_name)
            problems.append(
                f"package {source.package if source else impl.plugin_name} "
                f"({impl.plugin_name}) implements {hook_name}, which is not a hydraopt "
                f"hook{hint}"
            )
    if problems:
        raise PluginError("; ".join(problems))


def _collect(
    manager: pluggy.PluginManager, sources: Mapping[str, _Source], deadline_s: float
) -> tuple[list[RegisteredPlugin], list[BrokenPlugin]]:
    """Call every registration hook implementation once, keeping who provided what."""
    trace = os.environ.get(TRACE_VARIABLE, "") not in ("", "0")
    found: list[RegisteredPlugin] = []
    broken: list[BrokenPlugin] = []
    for kind, (hook_name, registration_type) in PLUGIN_KINDS.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            source = sources[impl.plugin_name]
            label = f"{impl.plugin_name}.{hook_name}"
            try:
                registrations = _within_deadline(
                    lambda impl=impl, hook=hook_name: _registrations(impl.function(), hook),
                    deadline_s,
                    label,
                )
                wrong = [r for r in registrations if not isinstance(r, registration_type)]
                if wrong:
                    raise TypeError(
                        f"{hook_name} must return {registration_type.__name__} objects, got "
                        f"{type(wrong[0]).__name__}"
                    )
            except Exception as exc:
                log.warning("skipping %s of %s: %s", label, source.package, exc)
                broken.append(BrokenPlugin(label, source.package, f"{type(exc).__name__}: {exc}"))
                continue
            for registration in registrations:
                mismatch = hooks_mismatch(registration.hooks_version, hookspecs.HOOKS_VERSION)
                if mismatch is not None:
                    broken.append(
                        BrokenPlugin(
                            f"{kind} {registration.name!r}",
                            source.package,
                            f"written for hydraopt's plugin hooks {registration.hooks_version}, "
                            f"this hydraopt has hooks {hookspecs.HOOKS_VERSION} ({mismatch}); "
                            f"install a version of {source.package} made for hooks "
                            f"{hookspecs.HOOKS_VERSION.split('.')[0]}.x",
                        )
                    )
                    continue
                if trace:
                    print(
                        f"[hydraopt plugins] {source.package} {source.version}: {hook_name} -> "
                        f"{kind} {registration.name!r}",
                        file=sys.stderr,
                    )
                found.append(RegisteredPlugin(registration, source.package, source.version))
    return found, broken


class PluginHung(Exception):
    """A plugin's import or registration hook did not return within the deadline."""


def _deadline_s() -> float:
    raw = os.environ.get(DEADLINE_VARIABLE, "")
    try:
        seconds = float(raw) if raw else DEFAULT_DEADLINE_S
    except ValueError:
        raise PluginError(f"{DEADLINE_VARIABLE}={raw!r} is not a number of seconds") from None
    if not seconds > 0:
        raise PluginError(f"{DEADLINE_VARIABLE}={raw!r} must be a positive number of seconds")
    return seconds


def _within_deadline(call: Callable[[], Any], seconds: float, what: str) -> Any:
    """``call()``'s result, or :class:`PluginHung` when it has not returned within the
    deadline. It runs in a daemon thread, which is abandoned if it hangs: Python cannot stop
    a thread, but an abandoned daemon thread neither blocks discovery nor the interpreter's
    exit."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"hydraopt plugin: {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise PluginHung(f"did not return within {seconds:g} s ({DEADLINE_VARIABLE})")
    error = outcome.get("error")
    if isinstance(error, Exception | KeyboardInterrupt):
        raise error
    if error is not None:  # a plugin's sys.exit() must not end hydraopt
        raise RuntimeError(f"{type(error).__name__}: {error}")
    return outcome["value"]


def _registrations(returned: Any, hook_name: str) -> list[Any]:
    """A hook's answer as a list: it returns (or yields) an iterable of registrations."""
    if returned is None:
        return []
    if not isinstance(returned, Iterable) or isinstance(returned, str | bytes):
        raise TypeError(
            f"{hook_name} must return or yield registrations, got {type(returned).__name__}; "
            "return a list, even of one"
        )
    return list(returned)

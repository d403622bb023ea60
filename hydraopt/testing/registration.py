"""The checks every plugin kind shares: its registration, and that it writes nowhere but the
working directory it is given."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hydraopt.plugin_types import PLUGIN_INTERFACES, PluginRegistration


def check_registration(
    registration: PluginRegistration, settings: Mapping[str, Any] | None = None, build: bool = True
) -> Any:
    """Any plugin's registration as hydraopt uses it: a description for ``hydraopt
    plugins``; a settings model that validates ``settings`` (default: its defaults), refuses
    an unknown key (derive it from :class:`~hydraopt.plugin_types.PluginSettings`) and
    pickles (each worker process rebuilds the plugin from it); and, with ``build``, a factory
    whose object implements the kind's interface. Returns that object (or the validated
    settings when ``build`` is false)."""
    import pickle

    from pydantic import ValidationError

    assert isinstance(registration, PluginRegistration), (
        f"expected a plugin registration, got {type(registration).__name__}"
    )
    label = f"{registration.kind} plugin {registration.name!r}"
    assert registration.description, f"{label} has no description for `hydraopt plugins`"
    model = registration.settings
    validated = model.model_validate(dict(settings or {}))
    try:
        model.model_validate({**(settings or {}), "no_such_setting_": 1})
    except ValidationError:
        pass
    else:
        raise AssertionError(
            f"settings of {label} accept an unknown key: derive the model from "
            "hydraopt.plugin_types.PluginSettings"
        )
    # Workers receive the settings pickled and rebuild them from their plain values.
    try:
        pickle.dumps(validated)
    except Exception as exc:
        raise AssertionError(f"settings of {label} do not pickle: {exc}") from None
    assert model.model_validate(validated.model_dump()) == validated, (
        f"settings of {label} do not rebuild from their values"
    )
    if not build:
        return validated
    built = registration.factory(validated)
    interface = PLUGIN_INTERFACES[registration.kind]
    assert isinstance(built, interface), (
        f"{label}'s factory returned {type(built).__name__}, which does not implement "
        f"{interface.__name__}"
    )
    return built


@contextlib.contextmanager
def confined(label: str) -> Iterator[Path]:
    """An empty working directory for a plugin's calls, with the current directory moved
    elsewhere for their duration; on exit, anything written into that current directory or
    beside the working directory fails the check, naming ``label``."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        workdir, elsewhere = root / "workdir", root / "current-directory"
        workdir.mkdir()
        elsewhere.mkdir()
        here = Path.cwd()
        os.chdir(elsewhere)
        try:
            yield workdir
        finally:
            os.chdir(here)
        written = sorted(p.name for p in elsewhere.iterdir())
        assert not written, f"{label} wrote {written} into the current directory"
        beside = sorted(p.name for p in root.iterdir() if p not in (workdir, elsewhere))
        assert not beside, f"{label} wrote {beside} beside its working directory"

"""The documentation is part of the contract: these fail when it drifts from the code."""

import inspect
import re
from pathlib import Path

import pytest

from hydraopt import hookspecs
from hydraopt.docgen import render_reference
from hydraopt.domain import FEATURE_NAMES
from hydraopt.plugin_types import PLUGIN_KINDS
from hydraopt.registry import PluginRegistry

ROOT = Path(__file__).resolve().parents[1]


def hook_functions():
    return [
        (name, function)
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("hydraopt_")
    ]


def test_every_hook_is_documented_with_its_signature():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for name, function in hook_functions():
        signature = f"{name}() -> {function.__annotations__['return']}"
        assert f"### `{signature}`" in guide, f"docs/plugins.md lacks a section for {signature}"
        assert function.__doc__ and "Example::" in function.__doc__, f"{name} lacks an example"


def test_every_hook_is_exercised_by_a_test():
    tests = "".join(
        p.read_text(encoding="utf-8")
        for p in (ROOT / "tests").glob("*.py")
        if p.name != "test_docs.py"
    )
    for name, _ in hook_functions():
        assert re.search(rf"def {name}\(", tests), f"no test implements {name}"


def test_pipeline_reference_is_up_to_date():
    committed = (ROOT / "docs" / "pipeline-toml.md").read_text(encoding="utf-8")
    assert committed == render_reference(PluginRegistry.discover()), (
        "docs/pipeline-toml.md is stale: run `make docs`"
    )


def test_cohort_doc_lists_every_feature():
    doc = (ROOT / "docs" / "cohorts.md").read_text(encoding="utf-8")
    for name in FEATURE_NAMES:
        assert f"`{name}`" in doc


def test_readme_quickstart_is_the_two_make_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make \w+", quickstart, flags=re.M) == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


# ---- the Hooks section's examples run ------------------------------------------------------


def hook_section(kind: str) -> str:
    """The "### `<kind's hook>() -> ...`" subsection of docs/plugins.md, up to the next
    heading."""
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    hooks = guide.split("\n## Hooks\n", 1)[1]
    hook_name = PLUGIN_KINDS[kind][0]
    start = hooks.index(f"\n### `{hook_name}() -> ")
    rest = hooks[start + 1 :]
    end = re.search(r"^##", rest[3:], flags=re.M)
    return rest if end is None else rest[: end.start() + 3]


def section_example(kind: str) -> str:
    """The section's example: its one ```python block that defines a hook."""
    blocks = re.findall(r"^```python\n(.*?)^```", hook_section(kind), flags=re.M | re.S)
    examples = [block for block in blocks if "@hookimpl" in block]
    assert len(examples) == 1, (
        f"the {kind} section of docs/plugins.md must end with one complete ```python example "
        f"defining its @hookimpl hook (found {len(examples)})"
    )
    return examples[0]


def import_example(kind: str, tmp_path: Path, monkeypatch):
    """The example as a module of its own, importable by name as a plugin's module is (so
    its settings and factory pickle, as worker processes need)."""
    import importlib.util
    import sys

    import pluggy

    name = f"docs_plugins_{kind}_example"
    path = tmp_path / f"{name}.py"
    path.write_text(section_example(kind), encoding="utf-8")
    # Importable by name until the test ends, here and in worker processes.
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
    monkeypatch.setitem(sys.modules, name, module)
    module.__spec__.loader.exec_module(module)
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(module)
    manager.check_pending()  # every @hookimpl is a hydraopt hook
    return module


def conformance(kind: str, registration) -> None:
    """The conformance check of the example's kind, as an author would run it."""
    from hydraopt import testing

    if kind == "simulator":  # rebuilt in a worker process under a timeout too
        testing.check_simulator_plugin(registration, timeout_s=60)
    else:
        getattr(testing, f"check_{kind}_plugin")(registration)


@pytest.mark.parametrize("kind", list(PLUGIN_KINDS))
def test_every_hook_section_ends_with_an_example_that_runs(kind, tmp_path, monkeypatch):
    """Each hook's section of docs/plugins.md shows a complete plugin of its kind: imported as
    a module, its hook yields registrations that pickle (as worker processes receive them),
    declare a hooks_version this hydraopt accepts, and pass the conformance check of their
    kind in hydraopt.testing."""
    import pickle

    from hydraopt.plugin_types import hooks_mismatch

    hook_name, registration_type = PLUGIN_KINDS[kind]
    module = import_example(kind, tmp_path, monkeypatch)
    registrations = list(getattr(module, hook_name)())
    assert registrations, f"the {kind} example's {hook_name} yields nothing"
    for registration in registrations:
        assert isinstance(registration, registration_type)
        assert registration.hooks_version is not None, "declare hooks_version in the example"
        assert hooks_mismatch(registration.hooks_version, hookspecs.HOOKS_VERSION) is None
        assert pickle.loads(pickle.dumps(registration)) == registration
        conformance(kind, registration)

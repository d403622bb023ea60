"""The documentation is part of the contract: these fail when it drifts from the code."""

import inspect
import re
from pathlib import Path

from hydraopt import hookspecs
from hydraopt.docgen import render_reference
from hydraopt.domain import FEATURE_NAMES
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

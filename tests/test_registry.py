import pytest
from pydantic import ValidationError

from hydraopt.errors import PluginError
from hydraopt.plugin_types import GeneratorPlugin
from hydraopt.registry import PluginRegistry

from plugin_sources import KEEP_BEST_FILTER


def test_built_ins_come_through_the_entry_point_group():
    registry = PluginRegistry.discover()
    sobol = registry.get("generator", "sobol")
    assert sobol.package == "hydraopt"
    assert {"random", "sobol", "latin-hypercube", "grid"} <= set(registry.names("generator"))


def test_third_party_distribution_is_discovered(install_distribution):
    install_distribution("acme-filters", "1.4.2", "acme_filters", KEEP_BEST_FILTER)
    registry = PluginRegistry.discover()
    plugin = registry.get("filter", "keep-best")
    assert (plugin.package, plugin.version) == ("acme-filters", "1.4.2")
    settings = registry.validate_settings("filter", "keep-best", {"fraction": 0.2})
    instance = registry.create("filter", "keep-best", settings)
    assert instance.settings.fraction == 0.2


def test_settings_model_rejects_unknown_keys_and_bad_types(install_distribution):
    install_distribution("acme-filters", "1.4.2", "acme_filters", KEEP_BEST_FILTER)
    registry = PluginRegistry.discover()
    with pytest.raises(ValidationError, match="fractoin"):
        registry.validate_settings("filter", "keep-best", {"fractoin": 0.2})
    with pytest.raises(ValidationError, match="fraction"):
        registry.validate_settings("filter", "keep-best", {"fraction": "most"})


def test_a_name_two_packages_claim_fails_only_where_it_is_used(install_distribution):
    from plugin_sources import OTHER_SOBOL

    install_distribution("other-sobol", "0.3", "other_sobol", OTHER_SOBOL)
    registry = PluginRegistry.discover()  # the clash does not stop discovery
    claims = [p for p in registry if p.kind == "generator" and p.name == "sobol"]
    assert sorted(p.package for p in claims) == ["hydraopt", "other-sobol"]
    assert "sobol" in registry.names("generator")
    with pytest.raises(PluginError) as caught:
        registry.get("generator", "sobol")
    message = str(caught.value)
    assert "'sobol' is registered by more than one package" in message
    assert "package hydraopt" in message and "package other-sobol 0.3" in message
    assert registry.get("generator", "random").name == "random"  # the others still work


def test_unknown_name_lists_what_exists_and_the_closest():
    registry = PluginRegistry.discover()
    with pytest.raises(
        PluginError,
        match=r"no generator plugin named 'sobl'; did you mean "
        r"'sobol'\?.*grid, grid-lhs, latin-hypercube, policy, random, sobol",
    ):
        registry.get("generator", "sobl")


def test_broken_entry_point_is_skipped_and_reported(install_distribution):
    install_distribution("broken-pkg", "1.0", "broken_mod", "import does_not_exist_anywhere\n")
    registry = PluginRegistry.discover()
    assert registry.get("generator", "sobol")  # the rest still works
    assert [b.package for b in registry.broken] == ["broken-pkg"]
    with pytest.raises(PluginError, match=r"broken-pkg.*ModuleNotFoundError"):
        registry.get("simulator", "fancy-fem")


def test_misspelled_hook_is_an_error_naming_package_and_hook(install_distribution):
    source = """
from hydraopt import hookimpl

@hookimpl
def hydraopt_simulator():
    return []

@hookimpl(optionalhook=True)
def hydraopt_reports():  # a hook of a later hydraopt, declared optional: allowed
    return []
"""
    install_distribution("typo-pkg", "1.0", "typo_mod", source)
    with pytest.raises(PluginError) as raised:
        PluginRegistry.discover()
    message = str(raised.value)
    assert "package typo-pkg" in message and "implements hydraopt_simulator" in message
    assert "did you mean hydraopt_simulators?" in message
    assert "hydraopt_reports" not in message


def test_plugin_objects_can_be_registered_from_a_script():
    import types

    from hydraopt import hookimpl

    module = types.SimpleNamespace(
        hydraopt_generators=hookimpl(
            lambda: [GeneratorPlugin(name="my-grid", factory=dict, description="x")]
        )
    )
    plugin = PluginRegistry.discover(extra={"my-study": module}).get("generator", "my-grid")
    assert (plugin.package, plugin.version) == ("my-study", "local")


def test_wrong_registration_type_is_reported(install_distribution):
    source = """
from hydraopt import hookimpl
from hydraopt.plugin_types import FilterPlugin

@hookimpl
def hydraopt_simulators():
    return [FilterPlugin(name="oops", factory=dict, description="wrong kind")]
"""
    install_distribution("wrong-pkg", "1.0", "wrong_mod", source)
    registry = PluginRegistry.discover()
    assert "oops" not in registry.names("filter")
    assert "must return SimulatorPlugin" in registry.broken[0].error


def test_a_hook_that_raises_is_reported_with_its_package_and_the_rest_still_work(
    install_distribution,
):
    source = """
from hydraopt import hookimpl

@hookimpl
def hydraopt_simulators():
    raise RuntimeError("licence server unreachable")
"""
    install_distribution("flaky-hook", "2.1", "flaky_hook", source)
    registry = PluginRegistry.discover()
    (broken,) = [b for b in registry.broken if b.package == "flaky-hook"]
    assert "hydraopt_simulators" in broken.entry_point
    assert broken.error == "RuntimeError: licence server unreachable"
    assert "reference-mechanics" in registry.names("simulator")


def test_a_hook_that_hangs_or_answers_wrongly_is_reported_and_discovery_goes_on(
    install_distribution, monkeypatch
):
    import time

    monkeypatch.setenv("HYDRAOPT_PLUGIN_DEADLINE_S", "0.5")
    install_distribution(
        "stuck-hook",
        "1.0",
        "stuck_hook",
        """
import time
from hydraopt import hookimpl

@hookimpl
def hydraopt_simulators():
    time.sleep(3600)  # waits for a licence server that never answers
""",
    )
    install_distribution("stuck-import", "1.0", "stuck_import", "import time\ntime.sleep(3600)\n")
    install_distribution(
        "single-answer",
        "1.0",
        "single_answer",
        """
from hydraopt import hookimpl
from hydraopt.plugin_types import GeneratorPlugin

@hookimpl
def hydraopt_generators():
    return GeneratorPlugin(name="lonely", factory=dict, description="not in a list")
""",
    )
    started = time.monotonic()
    registry = PluginRegistry.discover()
    assert time.monotonic() - started < 10
    errors = {b.package: b.error for b in registry.broken}
    assert errors["stuck-hook"] == (
        "PluginHung: did not return within 0.5 s (HYDRAOPT_PLUGIN_DEADLINE_S)"
    )
    assert errors["stuck-import"].startswith("PluginHung: did not return within 0.5 s")
    assert "must return or yield registrations, got GeneratorPlugin" in errors["single-answer"]
    assert "reference-mechanics" in registry.names("simulator")


def test_a_bad_plugin_deadline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HYDRAOPT_PLUGIN_DEADLINE_S", "soon")
    with pytest.raises(PluginError, match="HYDRAOPT_PLUGIN_DEADLINE_S='soon' is not a number"):
        PluginRegistry.discover()


def test_factory_must_build_the_kinds_interface():
    registry = PluginRegistry(
        [_registered(GeneratorPlugin(name="bad", factory=lambda s: object(), description="x"))]
    )
    with pytest.raises(PluginError, match="does not implement hydraopt's Generator interface"):
        registry.create("generator", "bad", None)


def test_registration_names_are_normalised_form():
    with pytest.raises(ValueError, match="lowercase words joined by hyphens"):
        GeneratorPlugin(name="My_Generator", factory=dict, description="x")


def test_trace_switch_prints_registrations(monkeypatch, capsys):
    monkeypatch.setenv("HYDRAOPT_TRACE_PLUGINS", "1")
    PluginRegistry.discover()
    assert "hydraopt_generators -> generator 'sobol'" in capsys.readouterr().err


def _registered(registration):
    from hydraopt.plugin_types import RegisteredPlugin

    return RegisteredPlugin(registration, "test", "0")


@pytest.mark.parametrize(
    ("declared", "usable"),
    [(None, True), ("1.0", True), ("1.1", True), ("1.9", False), ("2.0", False)],
)
def test_a_plugin_for_another_hook_contract_is_refused_naming_both_versions(
    install_distribution, declared, usable
):
    from hydraopt import HOOKS_VERSION

    assert HOOKS_VERSION == "1.1"
    source = f"""
from hydraopt import hookimpl
from hydraopt.plugin_types import GeneratorPlugin, NoSettings

class Mine:
    def __init__(self, settings): ...
    def generate(self, space, n, rng): ...

@hookimpl
def hydraopt_generators():
    yield GeneratorPlugin(
        name="future-sampler", factory=Mine, settings=NoSettings, hooks_version={declared!r}
    )
"""
    install_distribution("future-pkg", "3.0", "future_pkg", source)
    registry = PluginRegistry.discover()
    if usable:
        assert registry.get("generator", "future-sampler").package == "future-pkg"
        return
    with pytest.raises(PluginError) as caught:
        registry.get("generator", "future-sampler")
    message = str(caught.value)
    assert "generator 'future-sampler'" in message and "future-pkg" in message
    assert f"written for hydraopt's plugin hooks {declared}" in message
    assert "this hydraopt has hooks 1.1" in message


def test_a_malformed_hooks_version_is_refused():
    from hydraopt.plugin_types import GeneratorPlugin

    with pytest.raises(ValueError, match=r"hooks_version '1' must be 'MAJOR\.MINOR'"):
        GeneratorPlugin(name="x", factory=object, hooks_version="1")

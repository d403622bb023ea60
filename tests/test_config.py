import typing

import pytest

from hydraopt.config import CoveragePattern, load_pipeline
from hydraopt.domain import COVERAGE_PATTERNS
from hydraopt.errors import ConfigError
from hydraopt.registry import PluginRegistry

from plugin_sources import KEEP_BEST_FILTER


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


def problems_of(path, registry=None):
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path, registry)
    return caught.value.problems


def test_schema_literal_matches_the_domain():
    assert typing.get_args(CoveragePattern) == COVERAGE_PATTERNS


def test_valid_pipeline_fills_defaults(write_pipeline, registry):
    pipeline = load_pipeline(write_pipeline(), registry)
    config = pipeline.config
    assert config.design_space.stiffness_kpa.max == 50.0
    assert config.design_space.thickness_mm.scale == "linear"
    assert pipeline.run_dir == (pipeline.base_dir / "runs" / "t").resolve()
    assert pipeline.plugin_settings[("dataset", "generator")].scramble is True
    assert len(pipeline.config_hash()) == 64


def test_toml_syntax_error_gives_file_and_line(write_pipeline):
    path = write_pipeline('[study]\nname = "x"\nseed = = 3\n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:3: TOML syntax error")


def test_unknown_key_gives_line_key_and_suggestion(write_pipeline):
    path = write_pipeline("""\
        [study]
        name = "x"

        [cohort]
        n_patients = 3
        chronic_fractoin = 0.2
        """)
    [problem] = problems_of(path)
    assert problem.startswith(
        f"{path}:6: cohort.chronic_fractoin: unknown key; did you mean 'chronic_fraction'?"
    )
    assert "Expected one of: source, n_patients, chronic_fraction, path" in problem


def test_wrong_type_names_key_and_value(write_pipeline):
    path = write_pipeline('[study]\nname = "x"\nseed = "seven"\n[cohort]\nn_patients = 2\n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:3: study.seed: Input should be a valid integer")
    assert "(got 'seven')" in problem


def test_min_above_max_names_the_bound(write_pipeline):
    path = write_pipeline("""\
        [study]
        name = "x"
        [cohort]
        n_patients = 2
        [design_space]
        t50_days = { min = 200.0, max = 180.0, scale = "log" }
        """)
    [problem] = problems_of(path)
    assert problem == f"{path}:6: design_space.t50_days: min (200) must be smaller than max (180)"


def test_missing_required_section(write_pipeline):
    path = write_pipeline('[study]\nname = "x"\n')
    assert problems_of(path) == [f"{path}: cohort: required key is missing"]


def test_every_problem_is_reported(write_pipeline):
    path = write_pipeline("""\
        [study]
        name = "bad name!"
        [cohort]
        source = "csv"
        [execution]
        workers = -1
        """)
    problems = problems_of(path)
    assert [p.split(": ")[1] for p in problems] == ["study.name", "cohort", "execution.workers"]
    assert any("source = 'csv' needs path" in p for p in problems)


def test_missing_cohort_file_is_named(write_pipeline):
    path = write_pipeline('[study]\nname = "x"\n[cohort]\nsource = "csv"\npath = "gone.csv"\n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:5: cohort.path: no such file") and "gone.csv" in problem


def test_unknown_plugin_suggests_the_closest(write_pipeline, registry):
    path = write_pipeline("""\
        [study]
        name = "x"
        [cohort]
        n_patients = 2
        [dataset]
        designs_per_patient = 4
        generator = { plugin = "sobel" }
        """)
    [problem] = problems_of(path, registry)
    assert problem.startswith(
        f"{path}:7: dataset.generator.plugin: no generator plugin named "
        "'sobel'; did you mean 'sobol'?"
    )


def test_plugin_settings_are_validated_by_the_plugins_model(write_pipeline, registry):
    path = write_pipeline("""\
        [study]
        name = "x"
        [cohort]
        n_patients = 2

        [dataset]
        designs_per_patient = 4

        [dataset.generator]
        plugin = "grid"
        stiffness_kpa = "many"
        conductivty_s_per_m = 3
        """)
    problems = problems_of(path, registry)
    assert problems[0].startswith(
        f"{path}:11: dataset.generator.stiffness_kpa: Input should be a valid integer"
    )
    assert problems[1].startswith(
        f"{path}:12: dataset.generator.conductivty_s_per_m: unknown "
        "key; did you mean 'conductivity_s_per_m'?"
    )


def test_filter_chain_errors_name_the_filter_index(write_pipeline, install_distribution):
    install_distribution("acme-filters", "1.0", "acme_filters", KEEP_BEST_FILTER)
    path = write_pipeline("""\
        [study]
        name = "x"
        [cohort]
        n_patients = 2

        [screen]
        candidates_per_patient = 100

        [[screen.filters]]
        plugin = "keep-best"
        fraction = 0.5

        [[screen.filters]]
        plugin = "keep-best"
        fraction = 2.0
        """)
    [problem] = problems_of(path, PluginRegistry.discover())
    assert problem.startswith(
        f"{path}:15: screen.filters[1].fraction: Input should be less than or equal to 1"
    )


def test_unknown_simulator_table_is_reported(write_pipeline, registry):
    path = write_pipeline("""\
        [study]
        name = "x"
        [cohort]
        n_patients = 2
        [simulators.febio-mechanics]
        executable = "febio4"
        """)
    [problem] = problems_of(path, registry)
    assert problem.startswith(f"{path}:5: simulators.febio-mechanics: no simulator plugin named")


def test_unreadable_file(tmp_path):
    [problem] = problems_of(tmp_path / "missing.toml")
    assert "cannot read the pipeline file" in problem


def test_line_numbers_of_dotted_and_quoted_keys():
    from hydraopt.toml_lines import key_lines, line_of

    text = (
        "[design_space]\n"
        "# a comment with \u2028 a line separator\n"
        '"stiffness_kpa".min = 9\n'
        "stiffness_kpa.max = 1\n"
        '"thick\\"ness" = 2\n'
        "[[screen.filters]]\n"
        "plugin = 'a'\n"
        "[[screen.filters]]\n"
        "plugin = 'b'\n"
    )
    lines = key_lines(text)
    assert line_of(lines, ("design_space", "stiffness_kpa")) == 3
    assert line_of(lines, ("design_space", "stiffness_kpa", "max")) == 4
    assert line_of(lines, ("design_space", 'thick"ness')) == 5
    assert line_of(lines, ("screen", "filters", 1, "plugin")) == 9


def test_strict_types_and_finite_positive_bounds(write_pipeline):
    path = write_pipeline("""\
        [study]
        name = "x"
        seed = true
        [cohort]
        n_patients = 2
        [design_space]
        thickness_mm = { min = 0.1, max = inf, scale = "linear" }
        conductivity_s_per_m = { min = -1.0, max = 0.5, scale = "linear" }
        """)
    problems = problems_of(path)
    assert problems[0].startswith(f"{path}:3: study.seed: Input should be a valid integer")
    assert any(
        p.startswith(f"{path}:7: design_space.thickness_mm.max: Input should be a finite")
        for p in problems
    )
    assert f"{path}:8: design_space.conductivity_s_per_m: min must be positive, got -1" in problems


def test_keys_of_the_other_cohort_source_are_rejected(write_pipeline):
    path = write_pipeline('[study]\nname = "x"\n[cohort]\nn_patients = 2\npath = "c.csv"\n')
    [problem] = problems_of(path)
    assert problem == f"{path}:3: cohort: path applies to source = 'csv' only"


def test_unknown_included_polymer_is_caught_by_validate(write_pipeline):
    path = write_pipeline(
        '[study]\nname = "x"\n[cohort]\nn_patients = 2\n[polymers]\ninclude = ["gelma", "nope"]\n'
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:6: polymers.include[1]: no polymer 'nope' in the library")


def test_syntax_error_at_the_end_of_the_file(write_pipeline):
    path = write_pipeline('[study]\nname = "x')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:2: TOML syntax error")


def test_non_utf8_pipeline_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(b'[study]\nname = "t\xff"\n')
    assert problems_of(path) == [f"{path}:2: not UTF-8 text (invalid start byte)"]


def test_a_batch_system_cluster_needs_a_worker_count(write_pipeline):
    from conftest import QUICK_PIPELINE

    text = QUICK_PIPELINE.replace(
        "[execution]\nworkers = 1",
        '[execution]\nengine = "dask"\nworkers = 0\n[execution.dask]\ncluster = "slurm"',
    )
    [problem] = problems_of(write_pipeline(text))
    assert "pipeline.toml:" in problem and "execution.workers" in problem
    assert "a slurm cluster starts as many workers as you ask for" in problem


def test_the_dataset_is_simulated_by_the_simulators_it_names(write_pipeline, registry):
    from hydraopt.stages.simulate import STAGE as SIMULATE

    from conftest import QUICK_PIPELINE

    tables = "\n[simulators.reference-mechanics]\n\n[simulators.febio]\n"
    every = load_pipeline(write_pipeline(QUICK_PIPELINE + tables), registry).config
    assert every.dataset_simulators() == ["reference-mechanics", "febio"]
    chosen = QUICK_PIPELINE.replace(
        'generator = { plugin = "sobol" }',
        'generator = { plugin = "sobol" }\nsimulators = ["reference-mechanics"]',
    )
    config = load_pipeline(write_pipeline(chosen + tables), registry).config
    assert config.dataset_simulators() == ["reference-mechanics"]
    assert SIMULATE.plugins(config) == [("simulators", "reference-mechanics")]
    unknown = chosen.replace('["reference-mechanics"]', '["reference-ep"]')
    (problem,) = problems_of(write_pipeline(unknown + tables), registry)
    assert "dataset.simulators names ['reference-ep']" in problem
    assert "configured: ['reference-mechanics', 'febio']" in problem

"""The plugin contract: one pluggy hook per plugin kind.

Every hook is a *registration* hook: it takes no arguments and returns an iterable of typed
registrations (frozen dataclasses from :mod:`hydraopt.plugin_types`) naming what the plugin
provides, its factory and its settings model. The registry flattens them, so the core can list,
validate and construct plugins without importing their heavy dependencies: a factory imports
torch or transformers only when it is called.

A plugin is a module (or object) with ``@hookimpl``-decorated functions, registered under the
entry-point group ``hydraopt``::

    # pyproject.toml of the plugin's own distribution
    [project.entry-points.hydraopt]
    my_simulators = "my_package.hydraopt_plugin"

Implementations are called with keyword arguments and may omit arguments a spec gains later.
All results are collected (no ``firstresult``): every plugin contributes its registrations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from hydraopt.plugin_types import (
        EncoderPlugin,
        FilterPlugin,
        GeneratorPlugin,
        MesherPlugin,
        PolicyPlugin,
        SimulatorPlugin,
        SurrogatePlugin,
    )

PROJECT_NAME = "hydraopt"
# The version of this contract, MAJOR.MINOR: MAJOR changes when a hook, a registration or an
# interface changes so that plugins written for the old one break; MINOR when hooks or optional
# members are added. A registration may declare the version it was written for
# (``hooks_version``): it is used when its MAJOR is this one and its MINOR is not newer.
HOOKS_VERSION = "1.1"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def hydraopt_meshers() -> Iterable[MesherPlugin]:
    """Register patient mesh builders (an ellipsoid LV sized to the patient, an image-based
    pipeline, ...).

    A mesher's factory returns a :class:`hydraopt.plugin_types.Mesher`:
    ``build(patient, workdir) -> PatientMesh``, a tetrahedral LV tagged with regions, AHA
    segments, fibres and hydrogel treatment regions.

    :return: the meshers this plugin provides.

    Example::

        @hookimpl
        def hydraopt_meshers():
            yield MesherPlugin(
                name="mri-lv",
                factory=MriMesher,             # reads segmentations, imports its libraries
                settings=MriMesherSettings,
                description="LV mesh from the patient's cine and LGE MRI",
            )
    """


@hookspec
def hydraopt_simulators() -> Iterable[SimulatorPlugin]:
    """Register physics simulators (mechanics, electrophysiology, ...).

    A simulator's factory takes its validated settings and returns an object following
    :class:`hydraopt.plugin_types.Simulator`: it declares its outputs with units and evaluates a
    batch of designs on one patient's mesh,
    ``simulate(patient, mesh, designs, workdir) -> Outcomes``.

    :return: the simulators this plugin provides.

    Example::

        @hookimpl
        def hydraopt_simulators():
            yield SimulatorPlugin(
                name="laplace-wall-stress",
                factory=LaplaceSimulator,
                settings=LaplaceSettings,
                description="Laplace-law wall stress of a thick-walled sphere",
            )
    """


@hookspec
def hydraopt_encoders() -> Iterable[EncoderPlugin]:
    """Register polymer encoders (polyBERT with LoRA, fingerprints, ...).

    An encoder's factory returns a :class:`hydraopt.plugin_types.Encoder`: it maps polymer
    SMILES strings to fixed-size embeddings.

    :return: the encoders this plugin provides.

    Example::

        @hookimpl
        def hydraopt_encoders():
            yield EncoderPlugin(
                name="morgan-fingerprint",
                factory=make_morgan_encoder,   # imports rdkit when called
                settings=MorganSettings,
                description="RDKit Morgan fingerprint of the repeat unit",
            )
    """


@hookspec
def hydraopt_surrogates() -> Iterable[SurrogatePlugin]:
    """Register surrogate models (Stage 1) that predict outcomes from patient and design.

    A surrogate's factory returns a :class:`hydraopt.plugin_types.Surrogate` (provisional):
    ``fit(data, workdir)`` on simulated outcomes judged on held-out patients, ``save`` and
    ``load`` of its fitted state, and ``predict(patient, designs) -> Predictions``, the
    predicted outcomes with their standard deviations.

    :return: the surrogates this plugin provides.

    Example::

        @hookimpl
        def hydraopt_surrogates():
            yield SurrogatePlugin(
                name="hydra-bert",
                factory=make_hydra_bert,       # imports torch, transformers, peft when called
                settings=HydraBertSettings,
                description="polyBERT + LoRA encoder fused with patient and design features",
            )
    """


@hookspec
def hydraopt_policies() -> Iterable[PolicyPlugin]:
    """Register design policies (Stage 2) that learn to propose designs per patient.

    A policy's factory returns a :class:`hydraopt.plugin_types.Policy`: ``fit`` on design
    environments over the training patients, ``act`` on observations, ``save``/``load``.

    :return: the policies this plugin provides.

    Example::

        @hookimpl
        def hydraopt_policies():
            yield PolicyPlugin(
                name="ppo",
                factory=make_ppo_policy,
                settings=PPOSettings,
                description="PPO over the hybrid design space, rewarded by the surrogate",
            )
    """


@hookspec
def hydraopt_filters() -> Iterable[FilterPlugin]:
    """Register candidate filters, the links of Stage 3's hierarchical filter chain.

    A filter's factory returns a :class:`hydraopt.plugin_types.Filter` (provisional): given the
    patient, candidate designs, their predictions and a context (the patient's mesh, the
    built simulators, a random stream, a scratch folder), it returns the mask of candidates
    to keep.

    :return: the filters this plugin provides.

    Example::

        @hookimpl
        def hydraopt_filters():
            yield FilterPlugin(
                name="threshold",
                factory=ThresholdFilter,
                settings=ThresholdSettings,
                description="keep candidates whose predicted outcomes pass fixed thresholds",
            )
    """


@hookspec
def hydraopt_generators() -> Iterable[GeneratorPlugin]:
    """Register candidate generators that sample designs from a design space.

    A generator's factory returns a :class:`hydraopt.plugin_types.Generator`:
    ``generate(space, n, rng) -> DesignBatch``, deterministic for a given ``rng`` state.

    :return: the generators this plugin provides.

    Example::

        @hookimpl
        def hydraopt_generators():
            yield GeneratorPlugin(
                name="sobol",
                factory=SobolGenerator,
                settings=SobolSettings,
                description="scrambled Sobol' sequence over the continuous parameters",
            )
    """

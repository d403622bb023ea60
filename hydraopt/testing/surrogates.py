"""Conformance of surrogates: fit on held-out patients, predict with uncertainty, save, load."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hydraopt.domain import Predictions, TrainingData
from hydraopt.plugin_types import Encoder, SurrogatePlugin
from hydraopt.testing.examples import ExampleEncoder, example_training_data
from hydraopt.testing.registration import check_registration, confined

# Agreement asked of predictions that should be equal (a reloaded surrogate, a sub-batch):
# float32 arithmetic, summed in another order, differs in its last digits.
PREDICTION_RTOL = 1e-4
PREDICTION_ATOL = 1e-5


class _OtherEncoder:
    """``encoder`` under another fingerprint: what a surrogate must refuse to load with."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self.embedding_dim = encoder.embedding_dim
        self.fingerprint = f"{encoder.fingerprint}+another-encoder"

    def encode(self, psmiles: Any) -> np.ndarray:
        return self._encoder.encode(psmiles)

    def trainable_module(self) -> Any:
        return self._encoder.trainable_module()


def check_surrogate_plugin(
    registration: SurrogatePlugin,
    settings: Mapping[str, Any] | None = None,
    encoder: Encoder | None = None,
    train: TrainingData | None = None,
    validation: TrainingData | None = None,
    seed: int = 0,
) -> Predictions:
    """A surrogate registration as the ``train`` stage and the agents use it:
    :func:`check_registration`; ``fit`` on ``train``, selecting on ``validation`` (held-out
    patients; default :func:`example_training_data`) with ``encoder`` (default
    :class:`ExampleEncoder`), returns finite metrics by name and declares unique outputs with
    units, each one it was trained on; ``predict`` gives one finite prediction per row, each
    with a finite, non-negative standard deviation, the same in any batch and on every call;
    ``save`` and ``load`` into a new object give the same predictions; ``load`` refuses a
    folder saved with another encoder (``ValueError``); two fits with one ``seed`` agree;
    nothing is written outside the working directory. Keep ``settings`` small (few epochs):
    the surrogate is fitted twice."""
    assert isinstance(registration, SurrogatePlugin), (
        f"expected a SurrogatePlugin, got {type(registration).__name__}"
    )
    if train is None or validation is None:
        train, validation = example_training_data()
    encoder = encoder or ExampleEncoder()
    validated = check_registration(registration, settings, build=False)
    label = f"surrogate {registration.name!r}"
    with confined(label) as workdir:
        surrogate = check_registration(registration, settings)
        metrics = surrogate.fit(train, validation, encoder, workdir / "fit", seed)
        assert isinstance(metrics, Mapping), f"fit returned {type(metrics).__name__}"
        for name, value in metrics.items():
            assert isinstance(name, str) and np.isfinite(float(value)), (
                f"fit's metric {name!r} is {value!r}, not a finite number"
            )
        names = [spec.name for spec in surrogate.outputs]
        assert names and len(set(names)) == len(names), f"outputs {names} empty or repeated"
        for spec in surrogate.outputs:
            assert spec.unit, f"output {spec.name} declares no unit"
            assert spec.name in train.targets, f"it predicts {spec.name}, never trained on"
        predicted = _checked_predictions(surrogate, validation, names)
        again = surrogate.predict(validation.inputs)
        _assert_same(again, predicted, "two predict calls on the same rows")
        rows = np.arange(0, len(validation), 2)
        _assert_same(
            surrogate.predict(validation.inputs.take(rows)),
            predicted,
            "a row predicted in another batch",
            rows,
        )
        saved = workdir / "saved"
        saved.mkdir()
        surrogate.save(saved)
        restored = registration.factory(validated)
        restored.load(saved, encoder)
        _assert_same(restored.predict(validation.inputs), predicted, "the saved and loaded one")
        try:
            registration.factory(validated).load(saved, _OtherEncoder(encoder))
        except ValueError:
            pass
        else:
            raise AssertionError(
                f"{label} loaded a folder saved with another encoder (fingerprint "
                f"{encoder.fingerprint!r}); load must refuse it with a ValueError naming the file"
            )
        twin = registration.factory(validated)
        twin.fit(train, validation, encoder, workdir / "fit-again", seed)
        _assert_same(twin.predict(validation.inputs), predicted, f"a second fit with seed {seed}")
    return predicted


def _checked_predictions(surrogate: Any, data: TrainingData, names: list[str]) -> Predictions:
    predicted = surrogate.predict(data.inputs)
    assert isinstance(predicted, Predictions), f"predict returned {type(predicted).__name__}"
    assert len(predicted) == len(data), f"{len(predicted)} predictions for {len(data)} rows"
    assert list(predicted.mean.names) == names, (
        f"predicted {list(predicted.mean.names)}, declares {names}"
    )
    for name in names:
        mean, std = np.asarray(predicted[name]), np.asarray(predicted.std[name])
        assert np.all(np.isfinite(mean)), f"predicted {name} has NaN or infinite values"
        assert np.all(np.isfinite(std)) and np.all(std >= 0), (
            f"the standard deviation of {name} must be finite and non-negative"
        )
    return predicted


def _assert_same(
    got: Predictions, expected: Predictions, what: str, rows: np.ndarray | None = None
) -> None:
    for name in expected.mean.names:
        for kind, a, b in (
            ("prediction", got[name], expected[name]),
            ("standard deviation", got.std[name], expected.std[name]),
        ):
            b = np.asarray(b) if rows is None else np.asarray(b)[rows]
            assert np.allclose(a, b, rtol=PREDICTION_RTOL, atol=PREDICTION_ATOL), (
                f"{what} gives another {kind} of {name} (largest difference "
                f"{np.max(np.abs(np.asarray(a) - b)):.3g}): predictions must be deterministic"
            )

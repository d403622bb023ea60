"""The metrics that judge a surrogate, on hand-made predictions."""

import numpy as np
import pytest

from hydraopt.surrogate_evaluation import design_choice_metrics


def test_the_design_choice_is_judged_per_patient_by_what_was_simulated():
    # Patient A: 200 designs, ranked right but for the best, which the model predicts at
    # mid-range. Patient B: 100 designs, ranked right.
    simulated_a = np.linspace(0.0, 2.0, 200)
    predicted_a = simulated_a.copy()
    predicted_a[-1] = 1.0
    simulated_b = np.linspace(0.0, 1.0, 100)
    target = np.concatenate([simulated_a, simulated_b])
    patient = np.array(["A"] * 200 + ["B"] * 100)
    metrics = design_choice_metrics(target, np.concatenate([predicted_a, simulated_b]), patient)
    step = 2.0 / 199
    # A's chosen design is its second best, B's its best: the mean over patients
    assert metrics["top_design_shortfall"] == pytest.approx(step / 2)
    # One of A's best 1% (2 designs) is among its top 2 predictions; B's best (1) is chosen
    assert metrics["top_percent_recall"] == pytest.approx((0.5 + 1.0) / 2)

    # A model that ranks every design backwards chooses each patient's worst design
    backwards = design_choice_metrics(target, -target, patient)
    assert backwards["top_design_shortfall"] == pytest.approx((2.0 + 1.0) / 2)
    assert backwards["top_percent_recall"] == 0.0


def test_rows_without_a_simulated_value_are_left_out_of_the_choice():
    target = np.array([0.1, np.nan, 0.5, 0.2])
    predicted = np.array([0.0, 9.0, 0.4, 0.1])  # the unsimulated row would win
    metrics = design_choice_metrics(target, predicted, np.array(["A"] * 4))
    assert metrics["top_design_shortfall"] == 0.0
    assert design_choice_metrics(np.array([np.nan]), np.array([1.0]), np.array(["A"])) == {}


def test_a_design_tied_with_the_best_counts_among_them():
    # 100 designs, the best two tie: the best 1% is one design, and either of the two is it
    target = np.linspace(0.0, 1.0, 100)
    target[-2] = target[-1]
    predicted = target.copy()
    predicted[-1] = 0.0  # the model prefers the other of the tied pair
    metrics = design_choice_metrics(target, predicted, np.array(["A"] * 100))
    assert metrics == {"top_design_shortfall": 0.0, "top_percent_recall": 1.0}


def test_an_ensemble_draws_a_training_curve_per_member():
    from hydraopt.surrogate_evaluation import training_curves

    def epochs(n, member=None):
        extra = {} if member is None else {"member": member}
        return [{"epoch": e, "train_loss": 1.0, "validation_loss": 1.0, **extra} for e in range(n)]

    curves = training_curves({"hydrabert/morgan": epochs(3, 1) + epochs(2, 2), "one": epochs(4)})
    assert {label: len(records) for label, records in curves.items()} == {
        "hydrabert/morgan, member 1": 3,
        "hydrabert/morgan, member 2": 2,
        "one": 4,
    }

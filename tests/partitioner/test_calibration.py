"""Exit calibration on hand-made logits, with the expected arithmetic beside each assert."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgesplit.errors import ModelError
from partitioner.calibration import calibrate, max_softmax


def _logits(confident: list[bool], predicted: list[int]) -> np.ndarray:
    """Two-class logits: confident rows have softmax ~0.99995, others 0.5."""
    rows = []
    for sure, cls in zip(confident, predicted, strict=True):
        row = np.zeros(2)
        row[cls] = 10.0 if sure else 0.0
        rows.append(row)
    return np.array(rows)


def test_cascade_rates_and_accuracies() -> None:
    labels = np.array([0, 1, 0, 1])
    # exit_1 is confident on samples 0 and 1, right on 0, wrong on 1.
    e1 = _logits([True, True, False, False], [0, 0, 0, 0])
    # exit_2 is confident on samples 1 and 2 (1 was already taken), right on 2.
    e2 = _logits([False, True, True, False], [0, 1, 0, 0])
    # The final output is right on 0, 1, 3 and wrong on 2.
    final = _logits([True] * 4, [0, 1, 1, 1])
    cal = calibrate([e1, e2], final, labels, ["exit_1", "exit_2"], thresholds=[0.9])
    # exit_1 takes 2 of 4 (rate 0.5), 1 right (accuracy 0.5).
    assert cal.rate[0][0] == 0.5 and cal.accuracy[0][0] == 0.5
    # exit_2 takes sample 2 only: rate 1/4, accuracy 1.
    assert cal.rate[0][1] == 0.25 and cal.accuracy[0][1] == 1.0
    # Final on all: 3/4; after exit_1: samples 2, 3 -> 1/2; after both: sample 3 -> 1.
    assert cal.remaining_accuracy[0] == (0.75, 0.5, 1.0)
    assert cal.final_accuracy == 0.75
    # End to end with both exits: 0.5*0.5 + 0.25*1 + 0.25*1 = 0.75.
    rates, acc = cal.expected(0.9, 2)
    assert rates == (0.5, 0.25) and acc == pytest.approx(0.75)
    # With exit_1 only: 0.5*0.5 + 0.5*0.5 = 0.5.
    assert cal.expected(0.9, 1)[1] == pytest.approx(0.5)
    # Exits off: the final output alone.
    assert cal.expected(None, 2) == ((), 0.75)


def test_threshold_one_takes_nothing_and_empty_selection_is_nan() -> None:
    labels = np.array([0, 1])
    e1 = _logits([False, False], [0, 0])
    cal = calibrate([e1], _logits([True, True], [0, 1]), labels, ["exit_1"], thresholds=[0.6, 1.0])
    assert cal.rate[1][0] == 0.0
    assert math.isnan(cal.accuracy[1][0])
    assert cal.expected(1.0, 1)[1] == 1.0


def test_max_softmax_is_stable_for_large_logits() -> None:
    conf = max_softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    assert conf[0] == pytest.approx(1.0) and conf[1] == pytest.approx(0.5)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ModelError, match="at least one"):
        calibrate([], np.zeros((0, 2)), np.zeros(0, dtype=int), [])
    with pytest.raises(ModelError, match="thresholds must lie"):
        calibrate([], np.zeros((1, 2)), np.zeros(1, dtype=int), [], thresholds=[1.5])
    with pytest.raises(ModelError, match="exit 'exit_1': 3 rows for 2 labels"):
        calibrate([np.zeros((3, 2))], np.zeros((2, 2)), np.zeros(2, dtype=int), ["exit_1"])

"""Calibration: expected calibration error, reliability diagrams, temperature scaling."""

import numpy as np
import pytest

from resnet_tf.metrics import (
    calibration,
    evaluate_model,
    fit_temperature,
    plot_reliability,
    probabilities,
)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_ece_of_a_hand_computed_case():
    # Two images at confidence 0.9 (one right), two at 0.6 (both right): bins 13 and 9.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    result = calibration(probs, labels)
    assert result["ece"] == pytest.approx(0.5 * abs(0.9 - 0.5) + 0.5 * abs(0.6 - 1.0))
    assert result["reliability"]["count"][13] == 2 and result["reliability"]["count"][9] == 2


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 5))
    labels = np.array([rng.choice(5, p=p) for p in _softmax(logits / 2.0)])
    fitted = fit_temperature(_softmax(logits), labels)  # overconfident by a factor of 2
    assert fitted == pytest.approx(2.0, rel=0.05)
    before = calibration(_softmax(logits), labels)["ece"]
    after = calibration(probabilities(_softmax(logits), fitted), labels)["ece"]
    assert after < before / 3


def test_temperature_keeps_the_ranking_and_logits_become_probabilities():
    logits = np.array([[2.0, -1.0, 0.5]])
    probs = probabilities(logits)
    np.testing.assert_allclose(probs, _softmax(logits), rtol=1e-6)
    np.testing.assert_allclose(probabilities(probs, 2.0), _softmax(logits / 2.0), rtol=1e-5)
    assert probabilities(probs, 3.0).argmax() == 0


def test_evaluate_model_reports_ece_and_a_reliability_diagram(tiny_resnet, tmp_path):
    model = tiny_resnet(classes=3, size=8)
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(6, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 6))
               for _ in range(2)]
    metrics = evaluate_model(model, batches, ["a", "b", "c"])
    assert 0 <= metrics["ece"] <= 1 and sum(metrics["reliability"]["count"]) == 12
    cooled = evaluate_model(model, batches, ["a", "b", "c"], temperature=3.0)
    assert cooled["top1"] == metrics["top1"] and cooled["ece"] != metrics["ece"]
    plot_reliability(metrics, tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

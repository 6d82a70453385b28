"""Zero-shot portfolio selection on made-up learning curves: cheap configurations win small
budgets, large ones large budgets, and a configuration that helps nowhere is never chosen."""

from __future__ import annotations

import pytest

from kit.planning.zeroshot import Evaluation, portfolio_error, select

COMPS = ("a", "b", "c")


def curves(config: str, curve: list[float], seconds: float) -> list[Evaluation]:
    return [Evaluation(config, comp, tuple(curve), seconds) for comp in COMPS]


def test_a_budget_reaches_the_epochs_it_affords() -> None:
    e = Evaluation("x", "a", (0.9, 0.5, 0.4), epoch_seconds=10.0, fixed_seconds=5.0)
    assert [e.epochs_within(s) for s in (4, 15, 25, 1000)] == [0, 1, 2, 3]
    assert e.error_within(4) == 1.0 and e.error_within(25) == 0.5 and e.error_within(1e9) == 0.4


def test_cheap_for_small_budgets_large_for_large_ones() -> None:
    evaluations = [
        *curves("small", [0.6, 0.5, 0.45], seconds=1.0),
        *curves("large", [0.9, 0.5, 0.3, 0.2, 0.15], seconds=30.0),
        *curves("useless", [0.95, 0.9], seconds=0.5),
    ]
    small_budgets = select(evaluations, budgets=[3.0], size=3)
    assert [c for c, _ in small_budgets] == ["small"]
    wide = select(evaluations, budgets=[3.0, 300.0], size=3)
    assert sorted(c for c, _ in wide) == ["large", "small"]  # "useless" lowers nothing
    errors = [e for _, e in wide]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] == pytest.approx(portfolio_error(["small", "large"], evaluations, [3, 300]))
    assert errors[-1] == pytest.approx((0.45 + 0.15) / 2)


def test_only_configurations_evaluated_everywhere_are_candidates() -> None:
    evaluations = [
        *curves("everywhere", [0.5], seconds=1.0),
        Evaluation("one-competition", "a", (0.1,), 1.0),
    ]
    assert [c for c, _ in select(evaluations, [10.0], size=5)] == ["everywhere"]
    assert select([], [10.0], size=5) == []

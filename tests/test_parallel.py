"""Folds trained in worker processes: the same run, the same files, progress, errors."""

from __future__ import annotations

import numpy as np
import pytest

from kit.competition import Competition
from kit.errors import KitError
from kit.progress import Event
from kit.training.parallel import FoldPool, default_workers
from kit.training.runs import train_fold_in_worker
from kit.training.spec import RunSpec
from tests.test_train import TINY, run_tiny, write_tiny_competition


@pytest.fixture
def comp() -> Competition:
    return write_tiny_competition()


def test_folds_in_workers_make_the_same_run_as_one_process(comp: Competition, monkeypatch) -> None:
    monkeypatch.setenv("KIT_THREADS", "1")  # the workers' thread count: results comparable
    events: list[Event] = []
    parallel = run_tiny(comp, workers=2, on_event=events.append)
    assert sorted(parallel.trained_folds) == [0, 1, 2] and parallel.manifest.folds["complete"]
    # The workers' epochs and folds reached the parent's callback.
    folds_done = {e.done for e in events if e.what == "fold" and "done" in e.text}
    assert folds_done == {0, 1, 2}
    assert any(e.what == "epoch" for e in events)

    for fold in range(3):  # forget the run, train it again in this process
        for suffix in ("pt", "npz", "done.json"):
            (parallel.path / f"fold-{fold}.{suffix}").unlink()
    (parallel.path / "manifest.json").unlink()
    sequential = run_tiny(comp)
    assert sequential.run_id == parallel.run_id
    np.testing.assert_allclose(sequential.oof, parallel.oof, atol=1e-4)
    np.testing.assert_allclose(sequential.test, parallel.test, atol=1e-4)


def test_a_worker_error_reaches_the_parent_as_one_line(comp: Competition) -> None:
    spec = RunSpec("sp", {**TINY, "lr": -1.0}, epochs=1)
    with FoldPool(comp, 2) as pool, pytest.raises(KitError, match="lr must be positive"):
        futures = [pool.call(train_fold_in_worker, spec, fold) for fold in (0, 1)]
        pool.wait_all(futures)
        for future in futures:
            future.result()


def test_one_worker_per_cpu_core_and_one_on_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr("kit.training.parallel.available_cpus", lambda: 2)
    assert default_workers("cpu") == 2 and default_workers("cuda") == 1
    monkeypatch.setattr("kit.training.parallel.available_cpus", lambda: 64)
    assert default_workers("cpu") == 4

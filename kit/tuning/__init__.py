"""`kit tune`: one Optuna study per (competition, family), resumable, shareable between workers.

How a study runs
- Study ``"<competition>/<family>"`` searches the family's declared space
  (``get_family(name).search_space``) with a TPE sampler (multivariate, constant liar so that
  parallel workers spread out). The sampler is reseeded from ``(seed, trial number)`` before
  every trial: a run is reproducible, and neither a resumed run nor a second worker repeats the
  random start-up configurations of the first. The family's default config is trial 0, so
  the best tuned config can never score worse than the default on the search objective.
- The objective is the score of **fold 0 of the shared folds file** (``train_run(folds=1)``):
  RMSE for facial-keypoints, MAE for ibug-68, lower is better.
- ``epochs`` (``--epochs``) fixes every trial's epoch budget instead of searching it.
- ``timeout`` bounds the searches, split over the families. Optuna checks it only between
  trials, so a trial whose remaining epochs (at its own pace) would end after its family's
  share is pruned at an epoch's end (user attribute ``stopped_by: timeout``) and the search
  stops: ``--timeout`` is overrun by at most one epoch, not by a whole slow trial.
- Once every family's search is done, the best ``best_n`` trials per family are trained on
  all folds with ``train_run``: run folders are content-addressed and a run with more folds
  reuses finished ones, so fold 0 is not trained again, and OOF and test predictions then
  exist for ``kit stack``. They are listed, best CV first, in
  ``<work>/<competition>/tune_best.json``. The trials table shows the fold-0 score of every
  trial and the CV score over all folds of the trained-out ones.

Pruning and the "one value per step" limitation
  Optuna keeps one intermediate value per step, and pruners compare trials step by step. K-fold
  CV inside a trial would report epoch 1 of fold 0, then epoch 1 of fold 1 again, and so on, so
  the values of different folds would collide (or, with steps numbered across folds, pruning
  would compare fold 3 of one trial with fold 0 of another). kit avoids this by making the search
  objective fold 0 alone: only fold 0 trains inside a trial, so each step has one value. This
  also costs 1/K of a full CV per trial, and the trials that win are completed on every fold
  afterwards, at no waste. The price is a noisier objective (one fold, about N/K rows); the
  trained-out trials' full CV scores in the table show how well fold 0 ranked them.
  Steps are not epochs: trials draw their own epoch budget and schedule (cosine or one-cycle),
  so at epoch 10 a 30-epoch trial is annealed while a 150-epoch one is still at a high learning
  rate. A trial reports at 10 %, 20 %, ..., 100 % of its epoch budget (its best validation score
  so far), so the median (or Hyperband) pruner compares trials at the same point of their
  schedules. No trial is pruned before 30 % of its schedule, nor before a few trials finished.

Storage and workers
- Default storage: ``sqlite:///<work>/<competition>/tune.sqlite3`` (Optuna's RDBStorage).
  Any RDB URL works (``postgresql://user:pass@host/db``): several ``kit tune`` processes on one
  or many machines then share a study; the database hands out trial numbers, so no two workers
  run the same trial. No scheduler of kit's own is involved. Queued trials (the default
  config, re-queued ones) are handed out by a locked read-then-write; SQLite ignores
  ``SELECT ... FOR UPDATE``, so kit begins SQLite transactions ``IMMEDIATE`` (see
  ``studies.lock_sqlite_transactions``) and SQLite workers cannot take the same one either.
- Resumable: every finished trial is in the database. A Ctrl-C marks the running trial FAIL;
  a killed worker's trial stops sending heartbeats and is marked FAIL by the next worker that
  starts a trial ``2 * heartbeat`` seconds later, which re-queues its configuration once.
  ``trials`` is the study's target of finished (complete + pruned) trials, counted over all
  workers and earlier runs, so rerunning the same command continues where it stopped. A worker
  stops when finished plus running trials reach it (so n workers overshoot by at most n - 1).
- ``gpus=["0", "1"]`` starts one worker process per GPU (``CUDA_VISIBLE_DEVICES``), ``workers=N``
  N CPU worker processes (each pinned to its share of the cores); this process then trains the
  best trials on all folds. When starting workers by hand on several machines, give all but one
  ``--best 0``, or run ``kit tune COMP --best N`` once they are done (it only trains what is
  missing).
- The studies open in optuna-dashboard as they are: ``optuna-dashboard <storage URL>``.

Modules: settings (defaults, no Optuna), studies (storage, sampler, pruner), trials (one trial,
the search loop), workers (worker processes), table (the trials table), tuner (`tune`: the
searches, then the best trials on all folds). `parse_duration` is kit.durations'.
"""

import importlib
from typing import Any

from kit.tuning.settings import BEST_FILE, DEFAULT_TRIALS, HEARTBEAT_SECONDS, PRUNERS

# The public names and the module of each. They load on first use (PEP 562), so the settings
# above import without Optuna, torch or LightGBM.
_LAZY = {
    "TuneResult": "tuner",
    "tune": "tuner",
    "default_storage": "studies",
    "open_storage": "studies",
    "study_name": "studies",
    "key_params": "table",
    "tuning_table": "table",
    "TuneEvent": "trials",
}

__all__ = [
    "BEST_FILE",
    "DEFAULT_TRIALS",
    "HEARTBEAT_SECONDS",
    "PRUNERS",
    "TuneEvent",
    "TuneResult",
    "default_storage",
    "key_params",
    "open_storage",
    "study_name",
    "tune",
    "tuning_table",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kit.tuning' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kit.tuning.{_LAZY[name]}"), name)


def __dir__() -> list[str]:
    return __all__

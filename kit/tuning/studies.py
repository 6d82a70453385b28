"""Studies: the RDB storage (heartbeats on), the per-trial-seeded TPE sampler, the pruners, and
opening a family's study with its default config queued as trial 0."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from kit.competition import Competition
from kit.errors import KitError
from kit.models import get_family
from kit.training.config import resolve_config
from kit.tuning.settings import HEARTBEAT_SECONDS, PRUNERS

try:  # Optuna >= 4.9 renamed the retry callback and its storage argument
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _Retry

    _RETRY_ARG = "heartbeat_stale_trial_callback"
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as _Retry

    _RETRY_ARG = "failed_trial_callback"

PROGRESS_MARKS = tuple(range(10, 101, 10))  # pruning steps: % of a trial's epoch budget
PRUNE_WARMUP = 30  # % of the schedule before a trial may be pruned
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def study_name(comp: Competition, family: str) -> str:
    return f"{comp.name}/{family}"


def default_storage(comp: Competition) -> str:
    """The competition's SQLite study file as an SQLAlchemy URL (absolute path)."""
    return f"sqlite:///{(comp.workspace.root / 'tune.sqlite3').resolve()}"


def display_url(url: str) -> str:
    """`url` with its password hidden."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS) -> RDBStorage:
    """An RDBStorage with heartbeats on; a killed worker's trial is re-queued once."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}  # several workers share one file
    try:
        with quiet_optuna():
            storage = RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                **{_RETRY_ARG: _Retry(max_retry=1)},
            )
    except ImportError as exc:
        raise KitError(
            f"--storage {display_url(url)}: no database driver ({exc})",
            hint="for postgresql:// run `pip install 'psycopg[binary]'`",
        ) from exc
    except sqlalchemy.exc.ArgumentError as exc:
        raise KitError(
            f"--storage {url!r} is not a database URL",
            hint="e.g. sqlite:///path/tune.sqlite3 or postgresql://user:pass@host/db",
        ) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        raise KitError(f"cannot open --storage {display_url(url)}: {reason}") from exc
    if url.startswith("sqlite"):
        lock_sqlite_transactions(storage.engine)
    return storage


def lock_sqlite_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Make every SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE).

    Optuna hands a queued trial (the default config, a killed worker's retry) to a worker by
    reading it as WAITING, then writing RUNNING, in one transaction with SELECT ... FOR UPDATE,
    which SQLite ignores: two worker processes could both read WAITING and run the same trial
    (optuna issue #4621). With the lock taken at BEGIN, the second worker reads RUNNING and
    moves on. This is SQLAlchemy's documented pysqlite recipe, with IMMEDIATE.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _manual_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not emit its own BEGIN

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while creating the schema predate the hooks


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Hide Optuna's experimental-feature warnings (heartbeat, multivariate TPE)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


class TrialSeededSampler(BaseSampler):
    """TPE reseeded from (seed, trial number) before each trial.

    Trial numbers come from the database, so every worker and every resumed run samples from
    its own stream, and a run started afresh with the same seed samples the same configs.
    """

    def __init__(self, seed: int, n_startup_trials: int):
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._tpe = self._make_tpe(0)

    def _make_tpe(self, number: int) -> TPESampler:
        seed = int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0])
        with quiet_optuna():
            return TPESampler(
                seed=seed,
                n_startup_trials=self.n_startup_trials,
                multivariate=True,
                constant_liar=True,
            )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._make_tpe(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        with quiet_optuna():
            return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._tpe.after_trial(study, trial, state, values)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Pruners over the 10 %..100 % progress steps (see the module docstring)."""
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=4, n_warmup_steps=PRUNE_WARMUP, n_min_trials=3
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=PROGRESS_MARKS[0], max_resource=PROGRESS_MARKS[-1], reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise KitError(f"unknown pruner {name!r}", hint=f"valid: {', '.join(PRUNERS)}")


def startup_trials(target: int | None) -> int:
    """Random trials before TPE models the results: a quarter of the budget, 3 to 10."""
    return max(3, min(10, (target or 40) // 4))


def search_space_of(family: str) -> dict[str, BaseDistribution]:
    """The family's declared distributions, learnt by asking a throwaway in-memory study."""
    with quiet_optuna():
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    get_family(family).search_space(trial)
    return dict(trial.distributions)


def default_params(
    family: str, fixed: dict[str, Any], overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The family's default config (with `overrides`), restricted to its search space (values
    inside it only)."""
    config = resolve_config(family, overrides)
    defaults = {**config.train, **config.model}
    params = {}
    for name, dist in search_space_of(family).items():
        if name in fixed or name not in defaults:
            continue
        try:  # Optuna's own range check (private, but stable since Optuna 3)
            inside = dist._contains(dist.to_internal_repr(defaults[name]))
        except (ValueError, TypeError):
            inside = False
        if inside:
            params[name] = defaults[name]
    return params


def portfolio_params(family: str, fixed: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, trial parameters) of the portfolio's configurations of `family` that differ
    from its default inside the search space (kit/models/portfolio.toml)."""
    from kit.planning.portfolio import load_portfolio

    seen = [default_params(family, fixed)]
    queued = []
    for entry in load_portfolio():
        if entry.family != family:
            continue
        params = default_params(family, fixed, entry.overrides)
        if params not in seen:
            seen.append(params)
            queued.append((entry.name, params))
    return queued


def open_study(
    comp: Competition,
    family: str,
    storage: RDBStorage,
    *,
    seed: int,
    fixed: dict[str, Any],
    pruner: str,
    target: int | None,
) -> optuna.Study:
    """Load the family's study, or create it with the default config queued as trial 0 and
    the portfolio's other configurations of the family after it (a warm start).

    Creating is atomic in the database: only the worker that created the study queues the
    default, so two workers starting together do not both queue it.
    """
    name = study_name(comp, family)
    sampler = TrialSeededSampler(seed, startup_trials(target))
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, direction="minimize", sampler=sampler
        )
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(
            study_name=name, storage=storage, sampler=sampler, pruner=make_pruner(pruner)
        )
    study.set_user_attr("competition", comp.name)
    study.set_user_attr("family", family)
    study.set_user_attr("metric", comp.metric)
    study.set_user_attr("objective", "fold 0 of the shared folds file")
    study.enqueue_trial(default_params(family, fixed), user_attrs={"default": True})
    for entry, params in portfolio_params(family, fixed):
        study.enqueue_trial(params, user_attrs={"portfolio": entry})
    return optuna.load_study(
        study_name=name, storage=storage, sampler=sampler, pruner=make_pruner(pruner)
    )


def count_trials(study: optuna.Study, states: Sequence[TrialState] = FINISHED) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def best_value(study: optuna.Study) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    values = [v for v in values if v is not None]
    return min(values) if values else None

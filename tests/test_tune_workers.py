"""Several `kit tune` worker processes on one study: against SQLite, and a real PostgreSQL.

The PostgreSQL test uses $KIT_TEST_POSTGRES_URL when set; otherwise it starts a throwaway
cluster from Debian's binaries (/usr/lib/postgresql/*/bin, `apt-get install postgresql`) in a
temporary folder on a free port, as the `postgres` user when run as root. Without either it
skips.
"""

from __future__ import annotations

import getpass
import glob
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from test_tune import comp, start_worker, study_of  # noqa: F401  (comp is a fixture)

from kit.competition import Competition
from kit.store import done_folds
from kit.tuning import open_storage, tune, tuning_table
from kit.tuning.studies import FINISHED

TRIALS = 6


def check_shared_without_duplicates(study: optuna.Study, competition: Competition) -> None:
    """Every trial ran once, in one worker; both workers ran some; no config twice."""
    trials = study.get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    # Workers stop when finished + running trials reach the target; a worker may start one
    # trial in the instant another finishes its last, so at most one extra.
    assert TRIALS <= len(finished) <= TRIALS + 1
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert not [t for t in trials if t.state == TrialState.FAIL and "error" not in t.user_attrs]
    configs = [repr(sorted(t.params.items())) for t in trials]
    assert len(set(configs)) == len(configs), "a config was tried twice"
    workers = Counter(t.user_attrs["worker"] for t in trials)
    assert len(workers) == 2, f"one worker ran every trial: {workers}"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    run_ids = [t.user_attrs["run_id"] for t in complete]
    assert len(set(run_ids)) == len(run_ids)
    for run_id in run_ids:  # fold 0 trained exactly once, in the trial's own run folder
        assert done_folds(competition.workspace.runs / run_id) in ([0], [0, 1])


def test_two_workers_share_a_sqlite_study(comp: Competition) -> None:  # noqa: F811
    result = tune(
        comp, ["sp"], trials=TRIALS, best_n=1, epochs=2, device="cpu", workers=2, pictures=False
    )
    study = study_of(comp)
    check_shared_without_duplicates(study, comp)
    # The parent process then trained the best trial on all folds.
    (best,) = result.best_runs["sp"]
    # Only finished trials compete (a pruned trial keeps an intermediate value).
    winner = min(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    assert best.run_id == winner.user_attrs["run_id"]
    assert best.manifest.folds["trained"] == [0, 1] and best.resumed_folds == [0]
    logs = sorted((comp.workspace.root / "tune-logs").glob("worker-*.log"))
    assert [p.name for p in logs] == ["worker-0.log", "worker-1.log"]


QUEUED = 40


def take_queued_trials(url: str, results: multiprocessing.Queue) -> None:
    """A worker: ask for trials until the queue is empty; send the x of each trial it ran."""
    study = optuna.load_study(study_name="queue", storage=open_storage(url))
    ran = []
    try:
        while True:
            trial = study.ask()
            x = trial.suggest_int("x", 0, 10**9)
            if x >= QUEUED:  # a sampled trial: the queue is empty
                study.tell(trial, state=TrialState.FAIL)
                break
            study.tell(trial, float(x))
            ran.append(x)
    except Exception as exc:  # sent to the test, which fails with it
        results.put(f"{type(exc).__name__}: {exc}")
        return
    results.put(ran)


def test_sqlite_workers_never_take_the_same_queued_trial(tmp_path: Path) -> None:
    # Queued trials (the default config, a killed worker's retry) are handed out by a
    # read-then-write that SQLite does not lock unless kit begins its transactions IMMEDIATE;
    # without that, 4 processes ran 46-49 trials for these 40 in every try (optuna #4621).
    url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    study = optuna.create_study(study_name="queue", storage=open_storage(url))
    for x in range(QUEUED):
        study.enqueue_trial({"x": x}, skip_if_exists=False)
    results: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=take_queued_trials, args=(url, results))
             for _ in range(4)]  # fmt: skip
    for proc in procs:
        proc.start()
    ran = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    errors = [r for r in ran if isinstance(r, str)]
    assert not errors, errors
    assert sorted(x for worker in ran for x in worker) == list(range(QUEUED))


# ---------------------------------------------------------------- PostgreSQL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL: $KIT_TEST_POSTGRES_URL, or a throwaway local cluster."""
    if os.environ.get("KIT_TEST_POSTGRES_URL"):
        yield os.environ["KIT_TEST_POSTGRES_URL"]
        return
    try:  # psycopg 3, named in the URL (SQLAlchemy < 2.1 would pick psycopg2 for postgresql://)
        sqlalchemy.create_engine("postgresql+psycopg://kit@127.0.0.1/postgres")
    except ImportError as exc:
        pytest.skip(f"no PostgreSQL driver ({exc}): pip install 'psycopg[binary]'")
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to start PostgreSQL as postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = Path(tempfile.mkdtemp(prefix="kit-pg-"))
    if as_user:
        shutil.chown(data, "postgres")
    port = free_port()
    user = "kit"

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    try:
        run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", user, "-A", "trust",
            "--no-sync")  # fmt: skip
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-o", options, "-l",
            str(data / "log"), "-w", "start")  # fmt: skip
    except RuntimeError as exc:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL as {getpass.getuser()}: {exc}")
    try:
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate",
             "stop"], capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_a_postgresql_study(
    comp: Competition,  # noqa: F811
    postgres_url: str,
    tmp_path: Path,
) -> None:
    for name in optuna.get_all_study_names(postgres_url):  # a shared server: start clean
        if name.startswith(f"{comp.name}/"):
            optuna.delete_study(study_name=name, storage=postgres_url)
    args = ["--families", "sp", "--trials", str(TRIALS), "--epochs", "2", "--best", "0",
            "--device", "cpu", "--storage", postgres_url]  # fmt: skip
    workers = [start_worker(comp, *args, log=tmp_path / f"w{i}.log") for i in range(2)]
    for i, worker in enumerate(workers):
        assert worker.wait(timeout=300) == 0, (tmp_path / f"w{i}.log").read_text()[-2000:]
    study = study_of(comp, storage=postgres_url)
    check_shared_without_duplicates(study, comp)
    assert not (comp.workspace.root / "tune.sqlite3").exists()  # nothing went to SQLite

    # A later `kit tune --best 1` on the finished study trains the winner on all folds only.
    result = tune(comp, ["sp"], trials=TRIALS, best_n=1, storage=postgres_url,
                         epochs=2, device="cpu", pictures=False)  # fmt: skip
    assert len(study_of(comp, storage=postgres_url).get_trials()) == len(study.get_trials())
    (best,) = result.best_runs["sp"]
    assert best.resumed_folds == [0] and best.trained_folds == [1]
    shown = tuning_table(comp, postgres_url)
    assert list(shown.loc[shown["cv"].notna(), "run_id"]) == [best.run_id]

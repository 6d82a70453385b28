"""`kit track install COMP --every 1h`: run one snapshot on a schedule, by cron or a systemd user
timer. Without ``--apply`` it only prints what it would install.

- cron: one crontab line ending in the shell comment ``# kit-track:<competition>``; ``--apply``
  merges it into ``crontab -l`` (replacing an older line for the same competition) and loads the
  result with ``crontab -``. cron can only express intervals that divide an hour or a day; the
  minute is offset by a stable hash of the competition's name, so trackers do not all fire at :00.
  cron runs with a bare environment: keep the Kaggle credentials in ``~/.kaggle/kaggle.json``.
- systemd: ``kit-track-<competition>.service`` (oneshot) and ``.timer`` (any interval, with a
  randomized delay) under ``~/.config/systemd/user``; ``--apply`` writes them and runs
  ``systemctl --user daemon-reload`` and ``systemctl --user enable --now <timer>``.
  ``loginctl enable-linger $USER`` keeps user timers running while you are logged out.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from kit.errors import KitError
from kit.track.loop import format_every
from kit.workspace import write_text

MARKER = "# kit-track:"


def kit_executable() -> tuple[str, ...]:
    """The installed `kit` script, else `python -m kit` with this Python (from the workdir)."""
    found = shutil.which("kit")
    if found:
        return (str(Path(found).resolve()),)
    return (sys.executable, "-m", "kit")


@dataclass(frozen=True)
class Job:
    """What the scheduler runs: one `kit track snap`, from `workdir`, with this work root."""

    competition: str
    every: float  # seconds
    workdir: Path
    work_root: Path
    options: tuple[str, ...] = ()  # extra `kit track snap` options (--team, --source, --webhook)
    kit: tuple[str, ...] = field(default_factory=kit_executable)

    @property
    def argv(self) -> list[str]:
        return [
            *self.kit,
            "--work",
            str(self.work_root),
            "track",
            "snap",
            self.competition,
            *self.options,
        ]

    @property
    def unit(self) -> str:
        return f"kit-track-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.competition)}"

    @property
    def log(self) -> Path:
        return self.work_root / self.competition / "track.log"

    @property
    def env(self) -> dict[str, str]:
        """kit variables the scheduled run must see (cron and systemd start from a bare one)."""
        name = "KIT_COMPETITIONS"
        return {name: os.environ[name]} if os.environ.get(name) else {}


def make_job(
    competition: str, every: float, options: tuple[str, ...] = (), workdir: Path | None = None
) -> Job:
    from kit.workspace import work_root

    return Job(
        competition=competition,
        every=every,
        workdir=(workdir or Path.cwd()).resolve(),
        work_root=work_root().resolve(),
        options=options,
    )


# -------------------------------------------------------------------------------------------
# cron


def cron_schedule(every: float, seed: str) -> str:
    """The five cron fields for "every `every` seconds", offset by a hash of `seed`."""
    minutes, rest = divmod(round(every), 60)
    offset = zlib.crc32(seed.encode())
    hint = "use a divisor of 60 minutes or of 24 hours, or --systemd for any interval"
    if rest or minutes < 1:
        raise KitError(f"cron cannot run every {every:g} s", hint=hint)
    if minutes < 60 and 60 % minutes == 0:
        return f"{_steps(offset % minutes, minutes, 60)} * * * *"
    hours, rest = divmod(minutes, 60)
    if not rest and hours <= 24 and 24 % hours == 0:
        return f"{offset % 60} {_steps(offset % hours, hours, 24)} * * *"
    raise KitError(f"cron cannot run every {minutes} min", hint=hint)


def _steps(start: int, step: int, limit: int) -> str:
    return "*" if step == 1 else ",".join(str(v) for v in range(start, limit, step))


def crontab_line(job: Job) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in job.env.items())
    command = (
        f"cd {shlex.quote(str(job.workdir))} && {env + ' ' if env else ''}{shlex.join(job.argv)}"
        f" >> {shlex.quote(str(job.log))} 2>&1"
    )
    command = command.replace("%", r"\%")  # cron turns a bare % into a newline
    return f"{cron_schedule(job.every, job.competition)} {command} {MARKER}{job.competition}"


def merge_crontab(current: str, line: str, competition: str) -> str:
    """`current` without older lines for `competition`, plus `line`."""
    keep = [
        existing
        for existing in current.splitlines()
        if not existing.rstrip().endswith(f"{MARKER}{competition}")
    ]
    return "\n".join([*keep, line]) + "\n"


def apply_crontab(job: Job) -> str:
    """Install the job's line into the user's crontab; returns the new crontab."""
    listed = _run(["crontab", "-l"], check=False)
    if listed.returncode != 0 and "no crontab" not in listed.stderr.lower():
        raise KitError(f"crontab -l failed: {listed.stderr.strip() or listed.returncode}")
    current = listed.stdout if listed.returncode == 0 else ""
    merged = merge_crontab(current, crontab_line(job), job.competition)
    _run(["crontab", "-"], input_text=merged)
    return merged


# -------------------------------------------------------------------------------------------
# systemd


def _systemd_quote(arg: str) -> str:
    text = arg.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_units(job: Job) -> dict[str, str]:
    """File name -> content of the service and the timer."""
    exec_start = " ".join(_systemd_quote(a) for a in job.argv)
    env = "".join(f"Environment={_systemd_quote(f'{k}={v}')}\n" for k, v in job.env.items())
    service = (
        "[Unit]\n"
        f"Description=kit track: one leaderboard snapshot of {job.competition}\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\nType=oneshot\n"
        f"WorkingDirectory={_systemd_quote(str(job.workdir))}\n"
        f"{env}"
        f"ExecStart={exec_start}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=kit track {job.competition} every {format_every(job.every)}\n\n"
        "[Timer]\nOnActiveSec=1min\n"
        f"OnUnitActiveSec={job.every:.0f}s\n"
        f"RandomizedDelaySec={max(1, round(job.every * 0.1))}s\n"
        f"Unit={job.unit}.service\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {f"{job.unit}.service": service, f"{job.unit}.timer": timer}


def systemd_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def apply_systemd(job: Job) -> list[Path]:
    """Write the units, reload systemd's user manager, enable and start the timer."""
    folder = systemd_dir()
    written = []
    for name, text in systemd_units(job).items():
        write_text(folder / name, text)
        written.append(folder / name)
    _run(["systemctl", "--user", "daemon-reload"])
    _run(["systemctl", "--user", "enable", "--now", f"{job.unit}.timer"])
    return written


# -------------------------------------------------------------------------------------------


def _run(
    argv: list[str], input_text: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            argv, input=input_text, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError as exc:
        raise KitError(
            f"{argv[0]} is not installed", hint="install it, or print the schedule without --apply"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise KitError(f"{shlex.join(argv)} did not answer within 60 s") from exc
    if check and done.returncode != 0:
        reason = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
        raise KitError(f"{shlex.join(argv)} failed: {reason}")
    return done

"""`kit track COMP --every 30m`: poll until stopped. The only scheduler kit has (cron or a systemd
timer can run single snapshots instead: see kit.track.schedule).

- The wait between polls is `every` minus the time the poll took, times a random factor of
  1 ± `jitter`, so many trackers started together spread out.
- kit.kaggle already retries each call (429 with Retry-After, 5xx, dropped connections). When a
  poll still fails, the loop says so and carries on: after a 429 it waits 2, 4, 8... × `every`
  (at most `max_backoff`, at least Kaggle's Retry-After); after any other error it keeps the
  cadence.
- The FIRST poll fails fast on a permanent error (credentials, rules, unknown competition, bad
  data), so a misconfigured tracker stops at once instead of logging the same error all night.
- Ctrl-C (KeyboardInterrupt) ends the loop cleanly: a snapshot being written is rolled back by
  its transaction, and `run_loop` returns its counts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from kit.durations import format_duration, parse_duration
from kit.errors import KitError
from kit.progress import Event, OnEvent, ignore

MIN_EVERY = 60.0  # seconds; Kaggle rate-limits eagerly


def parse_every(text: str, minimum: float = MIN_EVERY) -> float:
    """ "30m", "1h", "1h30m", "90s", "2d" -> seconds (a unit is required)."""
    return parse_duration(
        text, "--every", bare_seconds=False, minimum=minimum, hint="e.g. 30m, 1h, 1h30m, 2d"
    )


format_every = format_duration


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind a KaggleError (kit.kaggle chains the client's error), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        seen = seen.__cause__
    return None


def retry_after(exc: BaseException) -> float | None:
    seen: BaseException | None = exc
    while seen is not None:
        headers = getattr(getattr(seen, "response", None), "headers", None)
        if headers is not None and headers.get("Retry-After"):
            try:
                return float(headers["Retry-After"])
            except ValueError:
                return None
        seen = seen.__cause__
    return None


def is_transient(exc: BaseException) -> bool:
    """Rate limits, server errors and network failures: worth waiting out."""
    status = http_status(exc)
    if status is not None:
        return status == 429 or status >= 500
    cause = exc.__cause__
    return isinstance(cause, OSError)  # requests' connection errors are OSErrors


@dataclass
class LoopStats:
    polls: int = 0
    errors: int = 0
    interrupted: bool = False
    last_error: str = ""


@dataclass
class Backoff:
    every: float
    jitter: float = 0.1
    max_backoff: float = 6 * 3600
    rng: Callable[[], float] = random.random

    def jittered(self, delay: float) -> float:
        return delay * (1 + self.jitter * (2 * self.rng() - 1))

    def after_error(self, exc: BaseException, failures: int) -> float:
        if http_status(exc) != 429:
            return self.every
        delay = min(self.max_backoff, self.every * 2**failures)
        return max(delay, retry_after(exc) or 0.0)


def run_loop(
    poll: Callable[[], object],
    every: float,
    *,
    jitter: float = 0.1,
    max_backoff: float = 6 * 3600,
    max_iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    on_event: OnEvent = ignore,
) -> LoopStats:
    """Call `poll` every `every` seconds until Ctrl-C or `max_iterations` polls."""
    backoff = Backoff(every, jitter, max_backoff, rng)
    stats, failures = LoopStats(), 0
    try:
        while max_iterations is None or stats.polls < max_iterations:
            started = clock()
            stats.polls += 1
            try:
                poll()
                failures, delay = 0, every - (clock() - started)
            except KitError as exc:
                if stats.polls == 1 and not is_transient(exc):
                    raise
                failures += 1
                stats.errors += 1
                stats.last_error = str(exc)
                delay = backoff.after_error(exc, failures)
                text = f"poll failed ({exc}); next try in {delay / 60:.1f} min"
                on_event(Event("track", "poll_failed", text=text))
            if max_iterations is not None and stats.polls >= max_iterations:
                break
            sleep(max(0.0, backoff.jittered(delay)))
    except KeyboardInterrupt:
        stats.interrupted = True
        on_event(Event("track", "stopped", text=f"stopped after {stats.polls} poll(s)"))
    return stats

"""Changes between two snapshots, said on the terminal and (optionally) POSTed to a webhook.

A change is one of: ``scored`` (a submission got its public score), ``failed`` (a submission
ended in ERROR), ``new_best`` (your best public score improved), ``rank`` (your rank moved, or
you appeared on the board). Changes are computed only when a NEW snapshot is stored, so each one
is announced once however often the same data is polled.

The webhook gets one JSON object per snapshot with changes::

    {"competition": ..., "taken_at": "...Z", "text": "all messages, one per line",
     "changes": [{"kind": "scored", "message": "...", ...details}]}

``text`` makes it readable by Slack/Mattermost-style incoming webhooks as is. A failing webhook is
reported on the terminal and never stops the tracker.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from kit.errors import KitError
from kit.progress import Event, OnEvent, ignore
from kit.track.store import iso_utc
from kit.track.views import Standing, better, fmt_score

WEBHOOK_TIMEOUT = 10.0  # seconds; the tracker must not hang on a slow endpoint


@dataclass(frozen=True)
class Change:
    kind: str  # scored | failed | new_best | rank
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def detect_changes(
    before: Standing,
    now: Standing,
    subs_before: pd.DataFrame,
    subs_now: pd.DataFrame,
    higher_is_better: bool,
) -> list[Change]:
    """What changed from `before` to `now` that you would want to hear about."""
    return [
        *_submission_changes(subs_before, subs_now),
        *_best_change(before, now, higher_is_better),
        *_rank_change(before, now),
    ]


def _submission_changes(before: pd.DataFrame, now: pd.DataFrame) -> list[Change]:
    old = {int(r.ref): r for r in before.itertuples()}
    changes = []
    for row in now.sort_values(["date", "ref"]).itertuples():
        was = old.get(int(row.ref))
        label = f"submission {row.ref} ({row.file_name or row.description or 'no file name'})"
        if row.status == "COMPLETE" and row.public_score and (was is None or not was.public_score):
            private = f", private {row.private_score}" if row.private_score else ""
            changes.append(
                Change(
                    "scored",
                    f"{label} scored {row.public_score} public{private}",
                    {
                        "ref": int(row.ref),
                        "public_score": row.public_score,
                        "private_score": row.private_score,
                        "file_name": row.file_name,
                    },
                )
            )
        elif row.status == "ERROR" and (was is None or was.status != "ERROR"):
            reason = row.error_description or "no reason given"
            changes.append(
                Change(
                    "failed",
                    f"{label} failed: {reason}",
                    {"ref": int(row.ref), "error": reason, "file_name": row.file_name},
                )
            )
    return changes


def _best_change(before: Standing, now: Standing, higher: bool) -> list[Change]:
    if not better(now.best, before.best, higher):
        return []
    was = f" (was {fmt_score(before.best)})" if before.best is not None else ""
    return [
        Change(
            "new_best",
            f"new best public score {fmt_score(now.best)}{was}",
            {"best": now.best, "previous": before.best},
        )
    ]


def _rank_change(before: Standing, now: Standing) -> list[Change]:
    if now.rank is None or now.rank == before.rank:
        return []
    if before.rank is None:
        message = f"on the board at rank {now.rank} of {now.n_teams}"
    else:
        word = "up" if now.rank < before.rank else "down"
        message = f"rank {before.rank} -> {now.rank} of {now.n_teams} ({word})"
    return [
        Change("rank", message, {"rank": now.rank, "previous": before.rank, "teams": now.n_teams})
    ]


def check_webhook_url(url: str) -> str:
    """Fail before the first snapshot, not at the first change, on a malformed webhook URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise KitError(f"webhook URL {url!r} is not an http(s) URL", hint="e.g. https://host/hook")
    return url


def payload(competition: str, taken_at: datetime, changes: Sequence[Change]) -> dict[str, Any]:
    return {
        "competition": competition,
        "taken_at": iso_utc(taken_at),
        "text": "\n".join(f"{competition}: {c.message}" for c in changes),
        "changes": [{"kind": c.kind, "message": c.message, **c.details} for c in changes],
    }


def post_webhook(url: str, body: dict[str, Any], timeout: float = WEBHOOK_TIMEOUT) -> str | None:
    """POST `body` as JSON; return None on success, else a one-line reason (never raises)."""
    data = json.dumps(body, default=str).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "kit-track"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        return f"webhook answered HTTP {exc.code}"
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"webhook unreachable ({reason})"
    return None


def announce(
    competition: str,
    taken_at: datetime,
    changes: Sequence[Change],
    webhook: str | None = None,
    on_event: OnEvent = ignore,
) -> str | None:
    """Print each change; POST them to `webhook` if given. Returns the webhook failure, if any."""
    if not changes:
        return None
    for change in changes:
        on_event(Event("track", "change", text=f"{competition}: {change.message}", detail=change))
    if webhook is None:
        return None
    failure = post_webhook(webhook, payload(competition, taken_at, changes))
    if failure:
        on_event(Event("track", "warning", text=f"{failure}; the tracker goes on"))
    return failure

"""Leaderboard and submission tracking: snapshots in SQLite, a polling loop, scheduled snapshots,
views, charts, an HTML report and change notifications (see each module's docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kit.competition import Competition


def leaderboard_slug(comp: Competition) -> str:
    """The Kaggle slug whose leaderboard `kit track` follows; a one-line error for a competition
    without a Kaggle page, so no command tracks, schedules or reports a board that is not there."""
    return comp.require_kaggle(
        "there is no leaderboard to track",
        hint="kit track follows a Kaggle leaderboard, and its competition.toml gives no "
        "kaggle_slug",
    )

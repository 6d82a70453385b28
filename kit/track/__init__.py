"""Leaderboard and submission tracking: snapshots in SQLite, a polling loop, scheduled snapshots,
views, charts, an HTML report and change notifications (see each module's docstring)."""

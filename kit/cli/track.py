"""`kit track`: leaderboard and submission snapshots, the polling loop, views, charts, report,
and scheduled snapshots. `kit track COMP ...` is short for `kit track snap COMP ...`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from kit.cli.app import app
from kit.cli.output import (
    Format,
    FormatOption,
    WideOption,
    check_format,
    fit_width,
    print_tables,
    write_csv,
    write_json,
)
from kit.competition import Competition, load_competition
from kit.console import console, err_console
from kit.track import leaderboard_slug, loop, schedule
from kit.workspace import check_output_file, check_output_folder, submissions_dir

if TYPE_CHECKING:
    from kit.track import views
    from kit.track.store import TrackStore


class SnapByDefault(TyperGroup):
    """Route `kit track COMP ...` (no subcommand) to `kit track snap COMP ...`."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["snap", *args]
        return super().parse_args(ctx, args)


track_app = typer.Typer(
    cls=SnapByDefault,
    no_args_is_help=True,
    help="Track the leaderboard and your submissions: snapshots, views, charts, a report.\n\n"
    "[bold]kit track COMP[/] is short for [bold]kit track snap COMP[/].",
    rich_markup_mode="rich",
)
app.add_typer(track_app, name="track")

Comp = Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")]
Team = Annotated[
    str | None,
    typer.Option(
        "--team",
        help="Your team name or id on the leaderboard (default: the team your submissions "
        "report, else $KAGGLE_USERNAME).",
    ),
]
Every = Annotated[str | None, typer.Option("--every", help="Poll until Ctrl-C, e.g. 30m, 1h.")]
Webhook = Annotated[
    str | None, typer.Option("--webhook", help="POST a JSON message here on each change.")
]


class Source(StrEnum):
    download = "download"
    api = "api"


SourceOption = Annotated[
    Source,
    typer.Option(
        "--source",
        help="Leaderboard via the CSV download (whole public board) or the paged API.",
    ),
]
Submissions = Annotated[
    Path | None,
    typer.Option(
        "--submissions",
        help="Folder of submission manifests for local CV scores (default submissions/COMP).",
    ),
]


def _tracked(name: str) -> Competition:
    """The competition, refused in one line when it has no Kaggle leaderboard to track."""
    comp = load_competition(name)
    leaderboard_slug(comp)
    return comp


def _manifests(comp: Competition, folder: Path | None) -> Path:
    return folder if folder is not None else submissions_dir(comp.name)


def _overview(
    comp: Competition, store: TrackStore, team: str | None, folder: Path | None, top: int = 10
) -> views.Overview:
    from kit.track import views

    ov = views.overview(store, comp.name, comp.metric, _manifests(comp, folder), team, top=top)
    for warning in ov.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    return ov


@track_app.command("snap")
def snap_command(
    competition: Comp,
    every: Every = None,
    webhook: Webhook = None,
    team: Team = None,
    source: SourceOption = Source.download,
    max_polls: Annotated[
        int | None, typer.Option("--max-polls", help="With --every: stop after N polls.")
    ] = None,
) -> None:
    """Take one snapshot of the leaderboard and your submissions (or poll with --every)."""
    from kit.cli.track_views import print_track_event
    from kit.track import notify, snapshot

    comp = _tracked(competition)
    if webhook:
        notify.check_webhook_url(webhook)

    def poll() -> snapshot.SnapshotResult:
        return snapshot.poll(
            comp, source=source.value, team=team, webhook=webhook, on_event=print_track_event
        )

    if every is None:
        poll()
        return
    seconds = loop.parse_every(every)
    err_console.print(f"tracking {comp.name} every {every} (Ctrl-C stops)")
    stats = loop.run_loop(poll, seconds, max_iterations=max_polls, on_event=print_track_event)
    console.print(f"{stats.polls} poll(s), {stats.errors} failed")


@track_app.command("show")
def show_command(
    competition: Comp,
    team: Team = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows of the leaderboard.")] = 10,
    submissions: Submissions = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """Your rank and best score with their changes, the top 10, your submissions with CV
    (--format csv: your submissions; json: all of it)."""
    from kit.cli import track_views
    from kit.track.store import TrackStore

    check_format(fmt, wide)
    comp = _tracked(competition)
    with TrackStore.existing(comp.workspace.root, comp.name) as store:
        ov = _overview(comp, store, team, submissions, top)
    if fmt is Format.csv:
        write_csv(track_views.submissions_frame(ov))
    elif fmt is Format.json:
        write_json(track_views.overview_data(ov))
    else:
        print_tables(track_views.render(ov, fit_width(wide)), wide=wide)


@track_app.command("plot")
def plot_command(
    competition: Comp,
    team: Team = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Leaders to plot.")] = 5,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder (default work/COMP/track).")
    ] = None,
    submissions: Submissions = None,
) -> None:
    """Write PNG charts: score over time, your rank over time, CV against public score."""
    from kit.track import plots
    from kit.track.store import TrackStore

    comp = _tracked(competition)
    folder = out or comp.workspace.root / "track"
    check_output_folder(folder, "--out")  # its charts are replaced; it must be a folder
    with TrackStore.existing(comp.workspace.root, comp.name) as store:
        charts = plots.write_charts(store, _overview(comp, store, team, submissions), folder, top_k)
    for chart in charts:
        console.print(f"wrote {chart.path}", soft_wrap=True)


@track_app.command("report")
def report_command(
    competition: Comp,
    team: Team = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Leaders to plot.")] = 5,
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file (default work/COMP/track/report.html).")
    ] = None,
    submissions: Submissions = None,
) -> None:
    """Write one self-contained HTML page with the charts and tables."""
    from kit.track import plots, report
    from kit.track.store import TrackStore

    comp = _tracked(competition)
    folder = comp.workspace.root / "track"
    if out is not None:
        check_output_file(out, "--out")
    with TrackStore.existing(comp.workspace.root, comp.name) as store:
        ov = _overview(comp, store, team, submissions)
        charts = plots.write_charts(store, ov, folder, top_k)
    path = report.write_report(ov, charts, out or folder / "report.html")
    console.print(f"wrote {path}", soft_wrap=True)


@track_app.command("install")
def install_command(
    competition: Comp,
    every: Annotated[str, typer.Option("--every", help="Interval, e.g. 30m, 1h.")] = "1h",
    systemd: Annotated[
        bool, typer.Option("--systemd", help="A systemd user timer instead of a crontab line.")
    ] = False,
    apply: Annotated[bool, typer.Option("--apply", help="Install it (default: print).")] = False,
    team: Team = None,
    source: SourceOption = Source.download,
    webhook: Webhook = None,
) -> None:
    """Print (or with --apply install) a crontab line or systemd timer taking one snapshot."""
    from kit.track import notify

    comp = _tracked(competition)
    if webhook:
        notify.check_webhook_url(webhook)
    options = (
        *(("--team", team) if team else ()),
        "--source",
        source,
        *(("--webhook", webhook) if webhook else ()),
    )
    job = schedule.make_job(comp.name, loop.parse_every(every), options)
    if systemd:
        for name, text in schedule.systemd_units(job).items():
            console.print(
                f"# {schedule.systemd_dir() / name}\n{text}", markup=False, soft_wrap=True
            )
        if apply:
            schedule.apply_systemd(job)
            console.print(
                f"enabled {job.unit}.timer (loginctl enable-linger keeps it running "
                "while you are logged out)"
            )
        return
    console.print(schedule.crontab_line(job), markup=False, soft_wrap=True)
    if apply:
        schedule.apply_crontab(job)
        console.print(f"installed in your crontab; output goes to {job.log}")

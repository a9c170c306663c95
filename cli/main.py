"""The ``pythagoras-node`` command: parses arguments, calls the library and the daemon, prints.

Every failure a person can cause ends with a message saying what to do and a non-zero exit
code; no traceback reaches the terminal for them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import __version__
from ..defaults import _parse_size, home_dir
from ..errors import PythagorasError

__all__ = ["main", "cli"]


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pythagoras-node")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="PYTHAGORAS_HOME",
              default=None, help="Home holding the store and swarm key [$PYTHAGORAS_HOME, ~/.pythagoras].")
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """A node of a pythagoras_p2p swarm, and the tools to look after its store."""
    ctx.obj = {"home": home_dir(home)}


@cli.group()
def cache() -> None:
    """Inspect, check and shrink the local store (results, values, functions)."""


def _store(ctx: click.Context):
    from ..store import open_store

    home = ctx.obj["home"]
    if not (home / "store").is_dir():
        _fail(f"there is no store in {home} yet; it is created by the first call of a pure "
              f"function (or pass --home / set PYTHAGORAS_HOME to the right one)")
    return open_store(home)


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def cache_stats(ctx: click.Context, as_json: bool) -> None:
    """Entries and sizes of the store."""
    from ..maintenance import human_bytes, stats

    s = stats(_store(ctx))
    if as_json:
        click.echo(json.dumps(s.as_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"store of {s.home}", show_header=False)
    for label, value in [
        ("results", f"{s.results:,}"), ("values", f"{s.values:,}"), ("functions", f"{s.functions:,}"),
        ("in LMDB", human_bytes(s.lmdb_bytes)),
        ("in value files", f"{human_bytes(s.blob_bytes)} ({s.blob_files:,} files)"),
        ("total", human_bytes(s.total_bytes)), ("cap", human_bytes(s.cap)),
    ]:
        table.add_row(label, value)
    Console().print(table)


@cache.command("verify")
@click.option("--repair", is_flag=True, help="Delete bad values and the results naming them.")
@click.pass_context
def cache_verify(ctx: click.Context, repair: bool) -> None:
    """Check that every stored value matches its address; exit 1 if any does not."""
    from ..maintenance import verify

    report = verify(_store(ctx), repair=repair)
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    click.echo(f"checked {report.values_checked:,} values and {report.results_checked:,} results: "
               f"{len(report.problems)} problem(s)"
               + (f", {report.repaired} entries repaired" if repair else ""))
    if report.problems and not repair:
        click.echo("run `pythagoras-node cache verify --repair` to delete them (results are "
                   "recomputed on their next call)", err=True)
        sys.exit(1)


@cache.command("gc")
@click.option("--max-size", help="Drop the oldest results until the store fits, e.g. 10G.")
@click.option("--older-than", type=float, help="Drop results stored more than this many days ago.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.pass_context
def cache_gc(ctx: click.Context, max_size: str | None, older_than: float | None, dry_run: bool) -> None:
    """Remove unreferenced values and stale files; optionally old results too."""
    from ..maintenance import gc, human_bytes

    max_bytes = None
    if max_size is not None:
        try:
            max_bytes = _parse_size(max_size)
        except ValueError:
            _fail(f"--max-size {max_size!r} is not a size; write e.g. 500M, 10G or 1T", 2)
    if older_than is not None and older_than < 0:
        _fail("--older-than takes a number of days of 0 or more", 2)
    report = gc(_store(ctx), max_bytes=max_bytes,
                older_than=None if older_than is None else older_than * 86400, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {report.results_removed:,} results, {report.values_removed:,} values and "
               f"{report.files_removed:,} stray files, {human_bytes(report.bytes_freed)}")


def main() -> None:
    """Entry point of the ``pythagoras-node`` console script."""
    try:
        cli(standalone_mode=True)
    except PythagorasError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()

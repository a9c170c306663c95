"""``pythagoras-node start``'s options for a node on someone's machine, and ``pause``/``resume``.

Every option is also an environment variable (``PYTHAGORAS_*``, in each option's help) and a
line in ``status`` (``owner``). Kept apart from :mod:`.main`, which only applies them.
"""

from __future__ import annotations

import time

import click

__all__ = ["owner_options", "owner_config", "owner_argv", "pause", "resume"]


def _cores(text: str) -> float:
    """``50%`` (of one core) or ``1.5`` (cores) as cores."""
    t = str(text).strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a load: write 50% (of one core) or 1.5 "
                                 f"(cores)") from None
    if not value > 0:
        raise click.BadParameter(f"{text!r}: the owner's load threshold must be more than zero")
    return value


def _bytes(text: str) -> int:
    from pythagoras_p2p.defaults import parse_size

    try:
        return parse_size(str(text))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size: write 2G, 512M or 0") from None


_OPTIONS = (
    click.option("--priority", envvar="PYTHAGORAS_PRIORITY", type=click.Choice(["low", "normal"]),
                 default="low", show_default=True,
                 help="Workers' priority: low is CPU nice 10 and idle I/O [$PYTHAGORAS_PRIORITY]."),
    click.option("--yield-to-owner/--dedicated", "yield_to_owner", envvar="PYTHAGORAS_YIELD_TO_OWNER",
                 default=True, show_default=True,
                 help="Pause while this machine's owner keeps it busy; --dedicated for servers "
                      "[$PYTHAGORAS_YIELD_TO_OWNER=0 for dedicated]."),
    click.option("--owner-busy", envvar="PYTHAGORAS_OWNER_BUSY", default="50%", show_default=True,
                 help="The owner's load (other programs' CPU, % of a core or cores) that pauses "
                      "the node [$PYTHAGORAS_OWNER_BUSY]."),
    click.option("--preempt", envvar="PYTHAGORAS_PREEMPT", is_flag=True,
                 help="Paused: also stop running calls and hand them back to their callers "
                      "(they run elsewhere) [$PYTHAGORAS_PREEMPT]."),
    click.option("--on-battery", envvar="PYTHAGORAS_ON_BATTERY", type=click.Choice(["pause", "run"]),
                 default="pause", show_default=True,
                 help="What the node does on battery [$PYTHAGORAS_ON_BATTERY]."),
    click.option("--keep-free", envvar="PYTHAGORAS_KEEP_FREE", default="2G", show_default=True,
                 help="Memory no call may start into (plus what its resources ask) "
                      "[$PYTHAGORAS_KEEP_FREE]."),
    click.option("--speculate/--no-speculate", envvar="PYTHAGORAS_SPECULATE", default=True,
                 show_default=True,
                 help="Run clients' second copies of slow calls on idle workers "
                      "[$PYTHAGORAS_SPECULATE=0 to refuse them]."),
)


def owner_options(command):
    """Add the owner's options to ``start`` (its function gets them as keyword arguments)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def owner_config(priority: str, yield_to_owner: bool, owner_busy: str, preempt: bool,
                 on_battery: str, keep_free: str, speculate: bool):
    """The :class:`~pythagoras_p2p.daemon.owner.policy.OwnerConfig` the options say."""
    from ..daemon.owner.policy import OwnerConfig

    return OwnerConfig(low_priority=priority == "low", yield_to_owner=yield_to_owner,
                       owner_busy=_cores(owner_busy), preempt=preempt, on_battery=on_battery,
                       keep_free=_bytes(keep_free), speculate=speculate)


def owner_argv(config) -> list[str]:
    """The same options for a ``start --detach``'s background process."""
    return ["--priority", "low" if config.low_priority else "normal",
            "--yield-to-owner" if config.yield_to_owner else "--dedicated",
            "--owner-busy", repr(config.owner_busy), "--on-battery", config.on_battery,
            "--keep-free", str(config.keep_free),
            "--speculate" if config.speculate else "--no-speculate",
            *(["--preempt"] if config.preempt else [])]


@click.command()
@click.option("--for", "duration", default=None,
              help="Resume by itself after this long: 90s, 30m, 2h, 1d (default: until `resume`).")
@click.pass_context
def pause(ctx: click.Context, duration: str | None) -> None:
    """Take no new calls (the swarm runs them elsewhere); lookups and copies go on."""
    from ..daemon.owner.manual import parse_duration
    from ..daemon.owner.manual import pause as pause_node

    try:
        seconds = None if duration is None else parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from None
    try:
        if seconds is not None:
            time.localtime(time.time() + seconds)  # an end this clock can show (else it raises)
    except (ValueError, OverflowError, OSError):
        raise click.BadParameter(f"{duration!r} is longer than this clock can count to; write a "
                                 f"shorter one (e.g. 30m or 2h), or leave out --for to pause "
                                 f"until `pythagoras-node resume`", param_hint="--for") from None
    state = pause_node(ctx.obj["home"], seconds)
    until = ("until `pythagoras-node resume`" if state["until"] is None else
             f"until {time.strftime('%H:%M', time.localtime(state['until']))}")
    click.echo(f"paused {until}: the node takes no new calls within a second (running ones "
               f"finish); it still answers lookups and keeps copies")


@click.command()
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Take calls again after `pause`."""
    from ..daemon.owner.manual import resume as resume_node

    was = resume_node(ctx.obj["home"])
    click.echo("resumed: the node takes calls again" if was else
               "the node was not paused by `pause` (status says why it takes no calls, if so)")

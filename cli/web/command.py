"""``pythagoras-node dashboard``: a live web page of the swarm, served from this machine's node."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys

import click

__all__ = ["dashboard", "INSTALL"]

INSTALL = 'pip install "pythagoras_p2p[dashboard]"'


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int, token: str | None) -> str:
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()  # any of this machine's names or addresses
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=7576, show_default=True,
              help="The port the page is served on.")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="The address to serve on. Any but loopback needs the token it prints.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True,
              help="Seconds between updates of the page.")
@click.pass_context
def dashboard(ctx: click.Context, port: int, bind: str, open_browser: bool, interval: float) -> None:
    """A live web page of the swarm: its nodes, the runs in flight, the cache, copies and
    failures, and plots of the last 15 minutes. Runs until Ctrl-C."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        click.echo(f"Error: the dashboard needs its extra dependencies: {INSTALL}", err=True)
        sys.exit(1)
    from pythagoras_p2p.net.nodefile import read_node_file
    from pythagoras_p2p.net.security import load_key

    from .gather import Gatherer
    from .server import make_app

    home = ctx.obj["home"]
    key = load_key(home)
    if key is None:
        click.echo(f"Error: there is no swarm key in {home}: run `pythagoras-node init` or "
                   f"`pythagoras-node join TOKEN` first", err=True)
        sys.exit(1)
    info = read_node_file(home)
    if info is None:
        click.echo(f"Error: no node is running for {home}; start one with "
                   f"`pythagoras-node start`", err=True)
        sys.exit(1)
    token = None if _is_loopback(bind) else secrets.token_urlsafe(24)
    gatherer = Gatherer(key, info["endpoint"])
    app = make_app(gatherer, token=token, port=port, interval=interval)
    url = _url(bind, port, token)
    try:
        _serve(app, bind, port, url, open_browser, token is not None)
    finally:
        gatherer.close()


def _serve(app, bind: str, port: int, url: str, open_browser: bool, shared: bool) -> None:
    import asyncio

    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, bind, port).start()
        except OSError as exc:
            await runner.cleanup()
            click.echo(f"Error: cannot serve on {bind}:{port} ({exc.strerror or exc}): pick "
                       f"another --port, or another --bind address of this machine", err=True)
            sys.exit(1)
        click.echo(f"dashboard of this swarm at {url}", nl=True)
        if shared:
            click.echo("anyone with this address (it holds the token) sees the swarm: share it "
                       "only with the people of the swarm")
        click.echo("Ctrl-C to stop")
        sys.stdout.flush()
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

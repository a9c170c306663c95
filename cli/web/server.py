"""The dashboard's web server (aiohttp): the page, its static files, and a server-sent event
stream that pushes a snapshot of the swarm about once a second while a page is open.

The nodes are asked only while someone watches. Bound to loopback (the default), requests must
name a loopback host (a page elsewhere cannot reach it through a name it rebinds); bound to
another address, every request needs the token printed at start, given once in the URL and kept
in a cookie from then on. No page, stream or snapshot contains the token or any key.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib import resources
from typing import Any

from aiohttp import web

__all__ = ["make_app", "COOKIE"]

COOKIE = "pythagoras_dashboard"
_STATIC = resources.files("pythagoras_p2p.cli.web") / "static"
_HEADERS = {  # nothing framed, sent elsewhere, or loaded from anywhere but this server
    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
}


class _Feed:
    """Snapshots, made in one thread of their own while pages watch; each page waits on it."""

    def __init__(self, gatherer: Any, interval: float):
        self.gatherer, self.interval = gatherer, interval
        self.watchers = 0
        self.latest: dict | None = None
        self.full = self.delta = ""  # the latest snapshot as JSON: with every sample, with new ones
        self.number = 0
        self.changed = asyncio.Condition()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="pythagoras-dashboard")
        self._sent_up_to: float | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if self.watchers:
                await self.refresh()
            await asyncio.sleep(max(0.05, self.interval - (loop.time() - started)))

    async def refresh(self) -> dict:
        snap = await asyncio.get_running_loop().run_in_executor(self._thread, self.gatherer.poll)
        samples = (snap.get("series") or {}).get("samples") or []
        new = [s for s in samples if self._sent_up_to is None or s[0] > self._sent_up_to]
        if samples:
            self._sent_up_to = samples[-1][0]
        self.latest = snap
        self.full = json.dumps({**snap, "reset": True}, separators=(",", ":"))
        series = {**snap.get("series", {}), "samples": new}
        self.delta = json.dumps({**snap, "series": series, "reset": False}, separators=(",", ":"))
        async with self.changed:
            self.number += 1
            self.changed.notify_all()
        return snap

    def newer(self, than: int) -> bool:
        return self.number != than

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def make_app(gatherer: Any, *, token: str | None, port: int, interval: float = 1.0) -> web.Application:
    """The dashboard as an aiohttp application; ``token``: required of every request when
    not None; ``port``: the port it listens on (for the loopback host check)."""
    app = web.Application(middlewares=[_guard(token, port)])
    app["feed"] = feed = _Feed(gatherer, interval)

    async def index(request: web.Request) -> web.StreamResponse:
        if token is not None and request.query.get("token"):  # keep it out of the address bar
            response = web.Response(status=303, headers={**_HEADERS, "Location": "/"})
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            return response
        return web.Response(body=(_STATIC / "index.html").read_bytes(), content_type="text/html",
                            headers=_HEADERS)

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
        kind = next((k for suffix, k in kinds.items() if name.endswith(suffix)), None)
        path = _STATIC / name
        if kind is None or "/" in name or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type=kind, headers=_HEADERS)

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={**_HEADERS, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        feed.watchers += 1
        try:
            seen = feed.number
            if feed.latest is None or time.time() - feed.latest.get("t", 0) > 2 * feed.interval:
                await feed.refresh()
            await response.write(f"data: {feed.full}\n\n".encode())
            seen = feed.number
            while True:
                async with feed.changed:
                    await feed.changed.wait_for(partial(feed.newer, seen))
                # a page that missed a snapshot (slow to read) gets every sample again
                body = feed.delta if feed.number == seen + 1 else feed.full
                seen = feed.number
                await response.write(f"data: {body}\n\n".encode())
        except ConnectionResetError:  # the page was closed
            pass
        finally:
            feed.watchers -= 1
        return response

    async def snapshot(request: web.Request) -> web.Response:
        snap = feed.latest
        if snap is None or time.time() - snap.get("t", 0) > 2 * feed.interval:
            snap = await feed.refresh()
        return web.json_response(snap, headers=_HEADERS)

    async def start_feed(app: web.Application) -> Any:
        task = asyncio.create_task(feed.run())
        yield
        task.cancel()
        feed.close()

    app.router.add_get("/", index)
    app.router.add_get("/events", events)
    app.router.add_get("/snapshot.json", snapshot)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", lambda request: _no_content())
    app.cleanup_ctx.append(start_feed)
    return app


async def _no_content() -> web.Response:
    return web.Response(status=204, headers=_HEADERS)


def _guard(token: str | None, port: int) -> Any:
    loopback = {f"{host}:{port}" for host in ("127.0.0.1", "localhost", "[::1]")}

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if token is None:
            if request.host not in loopback:
                raise web.HTTPForbidden(text="this dashboard answers only to 127.0.0.1 or "
                                             "localhost; use --bind to show it to other machines")
        else:
            given = request.query.get("token") or request.cookies.get(COOKIE) or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise web.HTTPForbidden(text="this dashboard needs its token: open the address "
                                             "`pythagoras-node dashboard --bind` printed")
        return await handler(request)

    return guard

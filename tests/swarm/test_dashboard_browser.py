"""``pythagoras-node dashboard`` in a real browser: headless Chromium (Debian's package), driven
by Playwright, looking at a three-host swarm.

The dashboard runs on host 0 next to its node and the browser runs in host 0's namespace too
(a wrapper starts Chromium through ``ip netns exec``), so it opens the page on 127.0.0.1 as a
person at that machine would. One swarm, one dashboard and one browser serve the whole module;
the tests run in order, each leaving the swarm in the state the next starts from (a host paused
and resumed, then one stopped, then one killed). A screenshot of each state is written to
``tmp/artifacts/dashboard`` (``$PYTHAGORAS_TEST_ARTIFACTS``), never committed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from clients import Client, whole_swarm_known
from helpers import wait_for
from netns import start_lan

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
PORT = 7576
ARTIFACTS = Path(os.environ.get("PYTHAGORAS_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "tmp" / "artifacts") / "dashboard"
WAIT_MS = 30_000  # the page's generous deadline for a state to show


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"the browser tests need Chromium: {INSTALL}"
    try:
        import aiohttp  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as exc:
        return f"the browser tests need {exc.name}: pip install -e \".[test]\""
    return None


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    lan = start_lan(tmp_path_factory.mktemp("dashboard") / "lan", 3, workers=2)
    try:
        for host in lan.hosts:
            whole_swarm_known(lan, host.index)
        yield lan
    finally:
        lan.close()


def _start_dashboard(host, *args: str) -> tuple[subprocess.Popen, str]:
    """``pythagoras-node dashboard ARGS`` on ``host``; returns it and the address it printed."""
    out = host.home / f"dashboard{len(args)}.out"
    with open(out, "w") as sink:
        proc = host.popen([sys.executable, "-m", "pythagoras_p2p.cli.main", "dashboard", *args],
                          stdout=sink, stderr=subprocess.STDOUT)

    def printed():
        if proc.poll() is not None:
            raise AssertionError(f"the dashboard exited ({proc.returncode}):\n{out.read_text()}")
        found = re.search(r"at (http://\S+)", out.read_text())
        return found.group(1) if found else None

    return proc, wait_for(printed, 30, message="the dashboard to say where it serves")


@pytest.fixture(scope="module")
def page(lan, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    host = lan.hosts[0]
    dashboard, url = _start_dashboard(host, "--port", str(PORT))
    assert url == f"http://127.0.0.1:{PORT}/"
    wrapper = tmp_path_factory.mktemp("chromium") / "chromium-in-host0"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {host.ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(wrapper),
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 860})
            tab.set_default_timeout(WAIT_MS)
            tab.goto(url)
            yield tab
        finally:
            browser.close()
            dashboard.terminate()
            dashboard.wait(15)


def _until(page, expression: str, what: str, timeout: float = WAIT_MS / 1000) -> None:
    """Wait until ``expression`` is true in the page. (Playwright's ``wait_for_function`` polls
    through ``eval``, which the page's Content-Security-Policy forbids, as it should.)"""
    wait_for(lambda: page.evaluate(expression), timeout, interval=0.1, message=what)


def _state(page, host, state: str, timeout: float = WAIT_MS / 1000) -> None:
    _until(page, f"document.querySelector('.node[data-hostname=\"{host.hostname}\"]')"
                 f"?.dataset.state === '{state}'", f"{host.hostname} to show {state}", timeout)


def _tile(page, host):
    return page.locator(f'.node[data-hostname="{host.hostname}"]')


def _shot(page, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


def test_three_hosts_show_as_three_serving_nodes(lan, page):
    _until(page, "document.querySelectorAll('.node[data-state=serving]').length === 3",
           "three serving nodes")
    shown = page.eval_on_selector_all(".node", "tiles => tiles.map(t => t.dataset.hostname)")
    assert sorted(shown) == sorted(h.hostname for h in lan.hosts)
    assert "(this node)" in _tile(page, lan.hosts[0]).inner_text()
    for host in lan.hosts:
        assert "0 of 2 busy" in _tile(page, host).inner_text()
    _shot(page, "serving")


def test_a_run_shows_a_progress_bar_that_moves(lan, page):
    # 36 calls in three thirds: the first runs at once, the others each wait for a gate the
    # test opens, so the bar stands still at 12, then at 24, however fast the machine is
    calls, gates = 36, [lan.root / "gate1", lan.root / "gate2"]
    client = Client(lan.hosts[1], textwrap.dedent(f"""
        @cloud.add_pure_function
        def stage(*, x, gates):
            import os, time
            gate = gates[x // 12 - 1] if x >= 12 else None
            while gate and not os.path.exists(gate):
                time.sleep(0.05)
            return x * x

        gates = {[str(g) for g in gates]!r}
        results = stage.sync_parallel(kw_args(x=i, gates=gates) for i in range({calls}))
        emit(results=results)
    """))
    run = page.locator('.run[data-function="stage"]')

    def bar_at(done: int) -> float:
        _until(page, f"document.querySelector('.run[data-function=stage]')?.dataset.done === '{done}'",
               f"the bar to show {done} done")
        assert run.get_attribute("data-total") == str(calls)
        return run.locator(".fill").evaluate("bar => bar.getBoundingClientRect().width")

    first = bar_at(12)
    gates[0].touch()
    second = bar_at(24)
    assert 0 < first < second
    assert "24 / 36" in run.inner_text() and "ETA" in run.inner_text()
    assert "@" + lan.hosts[1].hostname in run.inner_text()  # who: user@host pid N
    _until(page, "Array.from(document.querySelectorAll('.node'))"
                 ".some(t => /2 of 2 busy/.test(t.innerText))", "a busy node")
    _shot(page, "running")
    gates[1].touch()
    assert client.result()["results"] == [i * i for i in range(calls)]
    _until(page, "document.querySelectorAll('.run').length === 0", "the run to be over")


def test_a_failed_call_shows_its_remote_traceback(lan, page):
    Client(lan.hosts[2], textwrap.dedent("""
        @cloud.add_pure_function
        def broken(*, x):
            raise ValueError(f"no good: {x}")

        out = broken.sync_parallel([kw_args(x=7)], return_exceptions=True)
        emit(error=repr(out[0]))
    """)).result()
    failure = page.locator(".failure", has_text="broken(x=7)")
    failure.wait_for()
    failure.locator("summary").click()
    text = failure.inner_text()
    assert "ValueError" in text and "no good: 7" in text
    assert 'raise ValueError(f"no good: {x}")' in text or "line" in text  # its traceback


def test_a_paused_node_shows_paused_and_why(lan, page):
    host = lan.hosts[1]
    assert host.cli("pause").returncode == 0
    try:
        _state(page, host, "paused")
        assert "paused" in _tile(page, host).locator(".why").inner_text()
        _shot(page, "paused")
    finally:
        assert host.cli("resume").returncode == 0
    _state(page, host, "serving")


def test_a_stopped_node_shows_it_left(lan, page):
    host = lan.hosts[2]
    assert host.cli("stop").returncode == 0
    _state(page, host, "left")
    _shot(page, "left")


def test_a_killed_node_shows_lost_within_10_s(lan, page):
    host = lan.hosts[1]
    killed = host.kill_node()
    _state(page, host, "lost", 15)
    seen = time.time() - killed
    _shot(page, "lost")
    assert seen < 10, f"shown lost {seen:.1f} s after kill -9"


def _get(host, url: str, cookie: str | None = None) -> dict:
    """An HTTP GET from inside ``host``: the status and body, or the error."""
    code = textwrap.dedent(f"""
        import json, urllib.request, urllib.error
        req = urllib.request.Request({url!r}, headers={{"Cookie": {cookie or ""!r}}})
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k): return None
        try:
            with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as r:
                print(json.dumps({{"status": r.status, "body": r.read(200000).decode()}}))
        except urllib.error.HTTPError as e:
            print(json.dumps({{"status": e.code, "body": e.read().decode(),
                               "cookie": e.headers.get("Set-Cookie")}}))
        except OSError as e:
            print(json.dumps({{"error": repr(e)}}))
    """)
    done = host.run_python(code, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_page_is_private_unless_bound_and_then_needs_its_token(lan, page):
    host, other = lan.hosts[0], lan.hosts[2]
    # the module's dashboard listens on loopback only: another host's address reaches nothing
    assert "error" in _get(host, f"http://{host.ip}:{PORT}/")
    assert "error" in _get(other, f"http://{host.ip}:{PORT}/")
    bound, url = _start_dashboard(host, "--port", str(PORT + 1), "--bind", host.ip)
    try:
        token = re.search(r"token=([\w-]+)", url).group(1)
        base = f"http://{host.ip}:{PORT + 1}"
        for path in ("/", "/events", "/snapshot.json", "/static/dashboard.js"):
            assert _get(other, base + path)["status"] == 403, path
            assert _get(other, f"{base}{path}?token=wrong{token}")["status"] == 403, path
        entered = _get(other, f"{base}/?token={token}")
        assert entered["status"] == 303 and "HttpOnly" in entered["cookie"]
        cookie = entered["cookie"].split(";")[0]
        assert _get(other, base + "/", cookie)["status"] == 200
        snap = _get(other, base + "/snapshot.json", cookie)
        assert snap["status"] == 200 and json.loads(snap["body"])["nodes"]
        # this machine's keys (and the swarm's signing key, on its first machine): every value
        keys = [v for p in (host.home / "trust").glob("*.key")
                for v in json.loads(p.read_text()).values() if isinstance(v, str) and len(v) >= 20]
        assert len(keys) >= 3
        secrets = [token, *keys]
        for path in ("/", "/snapshot.json", "/static/dashboard.js"):
            body = _get(other, base + path, cookie)["body"]
            assert not any(s in body for s in secrets), path
    finally:
        bound.terminate()
        bound.wait(15)
    assert shutil.which("ip")

"""The I/O loop driver: callers run turns themselves, the background thread only when nobody waits."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from helpers import wait_for

from pythagoras_p2p.swarm.driver import Driver


class Loop:
    """A loop whose turns record which thread ran them; ``wake`` ends a waiting turn."""

    def __init__(self, turn=None, tick: float = 0.05):
        self.ran_on: list[str] = []
        self.readies: list = []
        self.woken = threading.Event()
        self.finished = 0
        self.close = False
        self.extra = turn
        self.driver = Driver(self.turn, self.woken.set, self.finish, name="test-loop", tick=tick)

    def turn(self, timeout: float, ready) -> bool:
        self.ran_on.append(threading.current_thread().name)
        self.readies.append(ready)
        if self.extra is not None:
            self.extra()
        if ready is None or not ready():
            self.woken.wait(timeout)
        self.woken.clear()
        return self.close

    def end(self) -> None:
        self.close = True
        self.driver.notify()
        self.driver.thread.join(10)

    def finish(self) -> None:
        self.finished += 1


def test_a_waiting_caller_runs_the_turns_and_the_background_thread_resumes_after():
    loop = Loop()
    loop.driver.start()
    wait_for(lambda: "test-loop" in loop.ran_on, 10, message="the background thread to turn")
    mine = threading.current_thread().name
    loop.ran_on.clear()
    loop.driver.drive_until(lambda: loop.ran_on.count(mine) >= 3)
    assert loop.ran_on.count(mine) == 3
    # While this thread drove, the background thread ran at most the turn it was in.
    assert loop.ran_on.count("test-loop") <= 1
    loop.ran_on.clear()
    wait_for(lambda: "test-loop" in loop.ran_on, 10, message="the background thread to take over")
    loop.end()
    assert loop.driver.over and loop.finished == 1


def test_ctrl_c_during_a_turn_is_raised_only_when_the_turn_is_over():
    state = {"turns": 0, "completed": 0}

    def turn_body() -> None:
        if threading.current_thread() is threading.main_thread():
            state["turns"] += 1
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of this turn
            state["completed"] += 1

    loop = Loop(turn_body)
    loop.driver.start()
    with pytest.raises(KeyboardInterrupt):
        loop.driver.drive_until(lambda: False)
    assert state == {"turns": 1, "completed": 1}  # the turn ran to its end, and no other began
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    loop.end()


def test_a_turn_that_fails_ends_the_loop_and_releases_every_caller():
    def fail() -> None:
        raise RuntimeError("broken")

    loop = Loop(fail)
    loop.driver.start()
    loop.driver.drive_until(lambda: False)  # returns: the loop is over
    assert loop.driver.over
    loop.driver.thread.join(10)
    assert loop.finished == 1


def test_two_callers_share_the_loop_and_each_sees_its_own_result():
    results: dict[str, bool] = {}
    loop = Loop()
    loop.driver.start()
    turns = {"n": 0}

    def count() -> None:
        turns["n"] += 1
        if turns["n"] == 10:
            results["a"] = True
        if turns["n"] == 20:
            results["b"] = True

    loop.extra = count
    threads = [threading.Thread(target=loop.driver.drive_until, args=(lambda k=k: k in results,))
               for k in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert results == {"a": True, "b": True}
    loop.end()


def test_a_program_s_own_sigint_handler_gets_each_held_signal_between_turns_and_is_put_back():
    received = []
    state = {"turns": 0, "completed": 0}

    def own(signum, frame):
        # Delivered between rounds of turns, when this thread no longer counts as a caller:
        # the background thread would serve a request the handler made.
        received.append((signum, loop.driver._callers, state["turns"] == state["completed"]))

    def turn_body() -> None:
        if threading.current_thread() is threading.main_thread():
            state["turns"] += 1
            if state["turns"] <= 2:  # a second Ctrl-C is held as well as the first
                os.kill(os.getpid(), signal.SIGINT)
            state["completed"] += 1

    previous = signal.signal(signal.SIGINT, own)
    try:
        loop = Loop(turn_body)
        loop.driver.start()
        loop.driver.drive_until(lambda: state["turns"] >= 3)  # the handler raises nothing: go on
        assert state == {"turns": 3, "completed": 3} and not loop.driver.over
        assert received == [(signal.SIGINT, 0, True), (signal.SIGINT, 0, True)]
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)
    loop.end()


def test_after_ctrl_c_the_background_thread_runs_the_loop_again():
    def turn_body() -> None:
        if threading.current_thread() is threading.main_thread():
            os.kill(os.getpid(), signal.SIGINT)

    loop = Loop(turn_body)
    loop.driver.start()
    with pytest.raises(KeyboardInterrupt):
        loop.driver.drive_until(lambda: False)
    assert loop.driver._callers == 0
    loop.ran_on.clear()
    wait_for(lambda: "test-loop" in loop.ran_on, 10, message="the background thread to take over")
    loop.end()


def test_a_request_left_unserved_by_a_caller_wakes_the_background_thread():
    inside, proceed, finished = threading.Event(), threading.Event(), threading.Event()

    def turn_body() -> None:
        if threading.current_thread() is threading.main_thread():
            inside.set()
            proceed.wait(10)

    loop = Loop(turn_body, tick=30.0)  # without a wake-up the background thread sleeps 30 s
    loop.driver.start()
    wait_for(lambda: "test-loop" in loop.ran_on, 10, message="the background thread to turn")

    def request_during_the_turn() -> None:
        inside.wait(10)
        loop.driver.notify()  # a request that the caller's turn, begun already, does not serve
        time.sleep(0.2)  # lets the background thread see the notice while the caller still drives
        finished.set()  # the caller's batch is done: it leaves without another turn
        proceed.set()

    helper = threading.Thread(target=request_during_the_turn)
    helper.start()
    loop.driver.drive_until(finished.is_set)
    helper.join(10)
    loop.ran_on.clear()
    wait_for(lambda: "test-loop" in loop.ran_on, 10, message="the background thread to serve it")
    loop.end()


def test_callers_waiting_together_do_not_cut_each_other_s_turns_short():
    loop = Loop()
    loop.driver.start()
    stop = threading.Event()
    callers = [threading.Thread(target=loop.driver.drive_until, args=(stop.is_set,)) for _ in range(2)]
    loop.ran_on.clear()
    for t in callers:
        t.start()
    wait_for(lambda: len(loop.ran_on) >= 1, 10, message="a turn")
    counted = len(loop.ran_on)
    time.sleep(0.5)  # the quiet period being measured, not a wait for a result
    turns = len(loop.ran_on) - counted
    stop.set()
    for t in callers:
        t.join(10)
    # Nothing happens: each turn waits its full slice (0.1 s), about five in 0.5 s. A caller
    # that woke the other on every try of the lock made hundreds.
    assert turns <= 12, turns
    assert all(r is not None for r in loop.readies[-turns:])  # callers pass what they wait for
    loop.end()


def test_replies_due_when_the_last_caller_leaves_are_read_by_the_background_thread_at_once():
    """A caller's turn may have sent another thread's lookup; once that caller leaves, nobody
    else drives for its reply, so the background thread takes over now, not after its tick."""
    awaiting = {"reply": False}
    loop = Loop(tick=60.0)
    loop.driver._awaiting = lambda: awaiting["reply"]
    loop.driver.start()
    wait_for(lambda: "test-loop" in loop.ran_on, 10, message="the background thread to turn")
    mine = threading.current_thread().name

    def a_turn_sends_a_lookup():
        awaiting["reply"] = True

    loop.extra = a_turn_sends_a_lookup
    loop.driver.drive_until(lambda: loop.ran_on.count(mine) >= 1)
    loop.ran_on.clear()
    wait_for(lambda: "test-loop" in loop.ran_on, 10,
             message="the background thread to read the replies nobody waits for")
    loop.end()


def test_a_request_made_while_this_thread_wakes_the_loop_does_not_deadlock(tmp_path):
    """A SIGINT handler may make a request while the interrupted thread was waking the loop."""
    from pythagoras_p2p.net.security import create_key, load_key
    from pythagoras_p2p.store.core import open_store
    from pythagoras_p2p.swarm.dispatcher import SwarmDispatcher

    create_key(tmp_path)
    dispatcher = SwarmDispatcher(load_key(tmp_path), open_store(tmp_path), [("127.0.0.1", 9)],
                                 connect_timeout=1.0)
    done = threading.Event()

    def interrupted_wake() -> None:
        with dispatcher._mail._lock:  # where the signal lands: inside a wake
            dispatcher.release([])  # what the program's handler does
        done.set()

    thread = threading.Thread(target=interrupted_wake, daemon=True)
    thread.start()
    assert done.wait(10), "a request made inside a wake deadlocked"
    dispatcher.close()

"""The I/O loop driver: callers run turns themselves, the background thread only when nobody waits."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from helpers import wait_for

from pythagoras_p2p.driver import Driver


class Loop:
    """A loop whose turns record which thread ran them; ``wake`` ends a waiting turn."""

    def __init__(self, turn=None):
        self.ran_on: list[str] = []
        self.woken = threading.Event()
        self.finished = 0
        self.close = False
        self.extra = turn
        self.driver = Driver(self.turn, self.woken.set, self.finish, name="test-loop", tick=0.05)

    def turn(self, timeout: float) -> bool:
        self.ran_on.append(threading.current_thread().name)
        if self.extra is not None:
            self.extra()
        self.woken.wait(timeout)
        self.woken.clear()
        return self.close

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
    loop.close = True
    loop.driver.notify()
    loop.driver.thread.join(10)
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
    loop.close = True
    loop.driver.notify()
    loop.driver.thread.join(10)


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
    loop.close = True
    loop.driver.notify()
    loop.driver.thread.join(10)


def test_a_program_s_own_sigint_handler_gets_the_held_signal_and_is_put_back():
    received = []

    def own(signum, frame):
        received.append(signum)

    state = {"turns": 0}

    def turn_body() -> None:
        if threading.current_thread() is threading.main_thread():
            state["turns"] += 1
            if state["turns"] == 1:
                os.kill(os.getpid(), signal.SIGINT)
                assert received == []  # held while the turn runs

    previous = signal.signal(signal.SIGINT, own)
    try:
        loop = Loop(turn_body)
        loop.driver.start()
        loop.driver.drive_until(lambda: state["turns"] >= 3)  # the handler raises nothing: go on
        assert state["turns"] == 3 and not loop.driver.over  # no turn failed
        assert received == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)
    loop.close = True
    loop.driver.notify()
    loop.driver.thread.join(10)

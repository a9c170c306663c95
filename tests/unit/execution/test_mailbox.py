"""The mailbox of a loop: requests from other threads, served in order, and the wake-up pipe."""

from __future__ import annotations

import select
import threading

from pythagoras_p2p.execution.mailbox import Mailbox


def test_requests_are_served_in_order_until_one_ends_the_loop():
    mail = Mailbox()
    try:
        for request in ("a", "b", "close", "c"):
            mail.put(request, wake=False)
        served: list = []
        assert mail.serve(lambda r: served.append(r) or r == "close") is True
        assert served == ["a", "b", "close"] and list(mail.requests) == ["c"]
        assert mail.serve(served.append) is False and served[-1] == "c"
    finally:
        mail.close()


def test_a_wake_from_another_thread_makes_the_poll_return_and_drain_rearms_it():
    mail = Mailbox()
    try:
        assert select.select([mail.fileno()], [], [], 0)[0] == []
        thread = threading.Thread(target=lambda: [mail.wake() for _ in range(10_000)])
        thread.start()
        assert select.select([mail.fileno()], [], [], 10)[0] == [mail.fileno()]
        thread.join()  # many wakes never block the waker, even with a full pipe
        mail.drain()
        assert select.select([mail.fileno()], [], [], 0)[0] == []
    finally:
        mail.close()
    mail.wake()  # after close: nothing happens, nothing is written to a reused descriptor
    mail.close()

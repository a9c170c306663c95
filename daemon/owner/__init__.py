"""A node on a personal machine stays out of its owner's way.

Its workers run at low priority (:func:`pythagoras_p2p.execution.worker_main._lower_priority`);
it pauses (takes no new call, hands queued ones back to their callers, who place them
elsewhere) when its owner says so (:mod:`.manual`), when the owner's own programs keep the
processor busy (:mod:`.watcher`), on battery, or when memory runs short (:mod:`.policy`); and
it serves the calls of different callers in turn (:mod:`.fairshare`). A paused node still
answers lookups and keeps and sends replicas: the team's cache stays whole.
"""

"""What running a call means anywhere: tasks and their outcomes, the ``sync_parallel`` algorithm,
the worker pool, one worker process and its main loop."""

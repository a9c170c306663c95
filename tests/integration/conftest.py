"""Fixtures of the integration tests (the harness itself is node_harness.py)."""

from node_harness import (  # noqa: F401  (pytest finds fixtures by name here)
    client,
    make_client,
    node,
    start_node,
    zctx,
)

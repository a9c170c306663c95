"""The swarm client: its I/O loop and who drives it, placement on peers, connections, values
exchanged with peers, stragglers."""

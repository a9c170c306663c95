"""The store of one home: LMDB environment, values and blob files, results, holds and leases,
the journal, maintenance, and how values are packed."""

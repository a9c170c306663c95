"""The backends behind ``PCloud``: one module each, all behind the interface of :mod:`.base`."""

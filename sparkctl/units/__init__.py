"""Catalog → unit files: names (the only place a unit name is spelled), quoting, rendering,
sparkctl's own units, atomic sync into the unit directories, and `render --check`."""

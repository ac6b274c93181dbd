"""The model catalog: schema (spec), loading and cross-checks (load, checks), engine flags."""

from sparkctl.catalog.load import Catalog, Model, load_catalog, read_spec, read_specs
from sparkctl.catalog.spec import ModelSpec, Status

__all__ = ["Catalog", "Model", "ModelSpec", "Status", "load_catalog", "read_spec", "read_specs"]

"""The model catalog: schema (spec), loading and cross-checks (load, checks), engine flags."""

from .load import Catalog, Model, load_catalog, read_spec, read_specs
from .spec import ModelSpec, Status

__all__ = ["Catalog", "Model", "ModelSpec", "Status", "load_catalog", "read_spec", "read_specs"]

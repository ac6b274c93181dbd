"""The doctor's check of what the daemon learned about its models (`runtime.state_dir`): a model
seen to take well above the memory its catalog entry declares (the daemon schedules it by what it
takes, but the entry should say so), and a model whose weights can never fit this host.

Read as the file is, without setting a broken one aside: that is the daemon's to do.
"""

from __future__ import annotations

from sparkctl.catalog import load_catalog
from sparkctl.core.learned import FILE, read_records
from sparkctl.core.scheduler import WELL_ABOVE
from sparkctl.core.slots import GIB
from sparkctl.core.weights import weights_size
from sparkctl.errors import SparkError
from sparkctl.settings import Settings
from sparkctl.tools.doctor.check import Check
from sparkctl.tools.doctor.hardware import meminfo
from sparkctl.tools.doctor.host import Host


def check_footprints(host: Host, settings: Settings) -> Check:
    name = "model footprints"
    total = meminfo(host).get("MemTotal", 0)
    try:
        catalog = load_catalog(settings)
    except SparkError as e:
        return Check(name, "warn", f"the catalog does not load ({e.message.splitlines()[0]})", None)
    if not total:
        return Check(name, "warn", "cannot read MemTotal from /proc/meminfo", None)
    path = host.path(settings.runtime.state_dir) / FILE
    try:
        records = read_records(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        records = {}
    except PermissionError:
        where = f"{settings.runtime.state_dir}/{FILE}"
        return Check(name, "warn", f"cannot read {where} (the daemon's)", "sudo sparkctl doctor")
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) else str(e)
        return Check(name, "warn", f"{settings.runtime.state_dir}/{FILE}: {why}", None)
    budget = settings.scheduler.memory_budget * total
    above, too_big = [], []
    for model in catalog.enabled:
        spec = model.spec
        declared = spec.engine.gpu_memory_utilization * total
        record = records.get(model.id)
        if record is not None and record.memory_bytes and record.memory_bytes > WELL_ABOVE * declared:
            above.append(
                f"{model.id} takes {record.memory_bytes / GIB:.1f} GiB, declares {declared / GIB:.1f} GiB"
                f" (gpu_memory_utilization {spec.engine.gpu_memory_utilization:g})"
            )
        weights = weights_size(
            host.path(settings.runtime.hf_cache), spec.source.hf_repo, spec.source.revision
        )
        if weights > max(budget, declared):  # (as the scheduler refuses: an exclusive model runs alone)
            too_big.append(f"{model.id}'s weights take {weights / GIB:.1f} GiB")
        elif record is not None and record.memory_bytes and record.memory_bytes > total:
            too_big.append(f"{model.id} was seen to take {record.memory_bytes / GIB:.1f} GiB")
    if too_big:
        return Check(
            name,
            "warn",
            "can never fit this host's memory budget"
            f" ({budget / GIB:.1f} GiB), so requests for them are refused: " + "; ".join(too_big),
            'a smaller quantisation, or disable the model (status = "disabled")',
        )
    if above:
        return Check(
            name,
            "warn",
            "seen to take well above what the catalog declares (scheduled by what they take): "
            + "; ".join(above),
            "raise engine.gpu_memory_utilization in those catalog entries to what they take",
        )
    seen = sum(1 for m in catalog.enabled if (r := records.get(m.id)) is not None and r.memory_bytes)
    return Check(
        name,
        "pass",
        f"{seen} of {len(catalog.enabled)} enabled models measured, each within its declared share",
    )

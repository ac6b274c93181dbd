"""The units of a model that spans Sparks — head and worker, Ray and native, container and
process — pass the real Quadlet generator and `systemd-analyze verify` of the sandboxed
systemd 252, as the shipped units do (test_units.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from sparkctl.catalog import load_catalog
from sparkctl.sandbox.box import Box
from sparkctl.units.render import render
from sparkctl.units.sync import sync
from tests.conftest import box_settings
from tests.helpers import write_model
from tests.integration.conftest import SPARKCTL

PEERS = {"spark-a": "10.77.0.1", "spark-b": "10.77.0.2"}
SPAN = {"nodes": 2, "gpu": "exclusive", "owner": "spark-a"}
CHECK = (
    "import json, sys; from pathlib import Path; from sparkctl.settings import Settings; "
    "from sparkctl.units import verify; from sparkctl.units.render import UnitFile; "
    "d = Path(sys.argv[1]); s = Settings.model_validate_json(sys.argv[2]); "
    "files = [UnitFile(p.name.endswith(('.container', '.network')) and 'quadlet' or 'unit', p.name, '') "
    "for p in sorted(d.iterdir())]; "
    "r = verify.check(files, {'quadlet': d, 'unit': d}, s); print(json.dumps([r.ok, r.lines]))"
)


def test_every_part_passes_quadlet_and_systemd_analyze(box: Box) -> None:
    catalog = box.path / "span-catalog"
    engine = {"command": ["vllm", "serve"]}
    write_model(catalog, "ray-c", serve=SPAN, engine={**engine, "host_port": 29310})
    write_model(
        catalog, "native-c", serve={**SPAN, "multinode": "native"}, engine={**engine, "host_port": 29311}
    )
    # The emulator stands in for vLLM (systemd-analyze checks that the command exists).
    process = {"runtime": "process", "image": None, "command": [SPARKCTL, "emulate"]}
    write_model(catalog, "ray-p", serve=SPAN, engine={**process, "port": 29312})
    write_model(catalog, "native-p", serve={**SPAN, "multinode": "native"}, engine={**process, "port": 29313})
    write_model(catalog, "local", engine={"host_port": 29314})
    try:
        for node, address in PEERS.items():
            settings = box_settings(
                box,
                cluster={
                    "node": node,
                    "interface": "veth-span",
                    "address": address,
                    "peers": [
                        {"name": n, "url": f"http://{a}:29300", "api_key_file": "/k"}
                        for n, a in PEERS.items()
                        if n != node
                    ],
                },
            )
            out = box.path / f"span-{node}"
            files = render(load_catalog(settings, [catalog]), settings)
            sync(files, {"quadlet": out, "unit": out})
            proc = box.run(sys.executable, "-c", CHECK, str(out), settings.model_dump_json(), check=False)
            ok, lines = json.loads(proc.stdout)
            assert ok, "\n".join(lines) + proc.stderr
            # 3 containers and the local one, each a service; 2 process services; the head's sockets.
            assert "quadlet 5.4.2: 3 container units generated" in lines, lines
            sockets = 5 if node == "spark-a" else 1  # a worker has no port of its own
            assert f"systemd-analyze verify: {5 + sockets} units OK" in lines, lines
    finally:
        subprocess.run(
            ["rm", "-rf", str(catalog), *(str(box.path / f"span-{n}") for n in PEERS)], check=False
        )

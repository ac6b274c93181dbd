"""`python -m sparkctl.emulator [serve] MODEL [vLLM flags]`: the container image's entrypoint."""

from __future__ import annotations

from sparkctl.emulator.lifecycle import main

raise SystemExit(main())

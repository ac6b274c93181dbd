"""The aiohttp gateway, sparkctl's OpenAI-compatible front door (BRIEF §4.5); `app.build_app`
assembles it."""

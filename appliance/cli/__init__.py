"""The ``appliance`` command line (entry point ``appliance.cli:main``); see :mod:`appliance.cli.main`."""

from appliance.cli.main import cli, main

__all__ = ["cli", "main"]

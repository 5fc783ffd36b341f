"""Kairos CLI: the `kairos` command for a running gateway's management API.

    kairos status
    kairos routes add -e '/api/users/{id}' -i '/users/{id}' -m GET -b http://10.0.0.5:8080
    kairos config validate config.json

`cli` is the click group (for embedding or testing); `ExitStatus` lists the exit
statuses scripts can branch on.
"""

from ._version import __version__
from .errors import CliError, ExitStatus
from .main import cli, main

__all__ = ["CliError", "ExitStatus", "__version__", "cli", "main"]

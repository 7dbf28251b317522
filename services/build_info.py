"""plateletwatch_build_info: which release (and Python) each service runs, for dashboards that
must tell an upgrade from a fault; `plateletwatch --version` prints the same."""

import platform
from importlib.metadata import version

from prometheus_client import Info

RELEASE = {"version": version("plateletwatch"), "python": platform.python_version()}

BUILD = Info("plateletwatch_build", "The PlateletWatch release and Python running this service.")
BUILD.info(RELEASE)


def describe() -> str:
    """The release as `plateletwatch --version` prints it."""
    return f"plateletwatch {RELEASE['version']} (Python {RELEASE['python']})"

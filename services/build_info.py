"""plateletwatch_build_info: which release (and Python) each service runs, for dashboards that
must tell an upgrade from a fault."""

import platform
from importlib.metadata import version

from prometheus_client import Info

BUILD = Info("plateletwatch_build", "The PlateletWatch release and Python running this service.")
BUILD.info({"version": version("plateletwatch"), "python": platform.python_version()})

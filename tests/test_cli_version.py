"""`plateletwatch --version`: the installed release and the Python running it, as
plateletwatch_build_info reports them."""

import platform
from importlib.metadata import version

import pytest

from services.cli import main


def test_version_prints_the_release_and_python(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert (
        printed
        == f"plateletwatch {version('plateletwatch')} (Python {platform.python_version()})\n"
    )

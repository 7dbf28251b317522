"""A short coverage-guided fuzz run of every ingest reader: no input may crash one.

`make fuzz` runs the long version (FUZZ_SECONDS per reader); this bounded run (about 10 s per
reader) is part of `make test`, so a new crash site fails CI naming its file, line and example.
"""

import json
import subprocess
import sys
from pathlib import Path

from fuzz.targets import TARGETS
from tests.conftest import REPO

SECONDS_PER_READER = 10


def test_a_short_fuzz_run_finds_no_crash_site(tmp_path: Path) -> None:
    out = tmp_path / "fuzz-results.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            f"--seconds={SECONDS_PER_READER}",
            f"--work={tmp_path / 'work'}",
            f"--out={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SECONDS_PER_READER * len(TARGETS) + 120,
        check=False,
    )
    assert out.exists(), run.stdout + run.stderr
    results = json.loads(out.read_text())
    sites = [
        f"{s['reader']}: {s['exception']} at {s['where']} ({s['message'][:120]}); "
        f"input {s['example_preview'][:120]}"
        for s in results["crash_sites"]
    ]
    assert sites == [], "\n".join(sites)
    assert run.returncode == 0, run.stdout + run.stderr
    tried = {reader["reader"]: reader["inputs"] for reader in results["readers"]}
    assert set(tried) == set(TARGETS)
    assert all(count >= 1000 for count in tried.values()), tried

"""A short coverage-guided fuzz run of every ingest reader: no input may crash one.

`make fuzz` runs the long version (FUZZ_SECONDS per reader); this bounded run (about 10 s per
reader) is part of `make test`, so a new crash site fails CI naming its file, line and example.
"""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fuzz.crashes import CrashLog
from fuzz.mutators import ByteMutator, mutate_hl7, mutate_json
from fuzz.targets import TARGETS
from tests.conftest import REPO

SECONDS_PER_READER = 10


def _crash(data: bytes) -> ValueError:
    try:
        int(data)
    except ValueError as error:
        return error
    raise AssertionError("int() accepted it")


def test_crashes_are_grouped_by_site_with_one_saved_example(tmp_path: Path) -> None:
    log = CrashLog(tmp_path)
    assert log.record(_crash(b"x"), b"x")
    assert not log.record(_crash(b"y"), b"y")
    (site,) = log.sites()
    line = _crash.__code__.co_firstlineno + 2  # int(data), the innermost frame
    assert (site["where"], site["exception"], site["inputs"]) == (
        f"tests/test_fuzz.py:{line}",
        "ValueError",
        2,
    )
    assert Path(site["example"]).read_bytes() == b"x"


@pytest.mark.parametrize(
    ("mutate", "seed_input"),
    [
        (mutate_json, json.dumps({"resourceType": "Bundle", "entry": [{"a": [1, "x"]}]}).encode()),
        (mutate_json, b"not json"),
        (mutate_hl7, (REPO / "examples" / "oru-r01-critical.hl7").read_bytes()),
    ],
)
def test_mutators_always_give_bytes_within_the_size_limit(
    mutate: Callable[[bytes, int, int, ByteMutator], bytes], seed_input: bytes
) -> None:
    for seed in range(300):
        out = mutate(seed_input, 4096, seed, lambda data, _: data[:10])
        assert isinstance(out, bytes)
        assert len(out) <= 4096


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

"""`python -m fuzz`: coverage-guided fuzzing of every ingest reader, one after the other.

Each reader runs in its own worker process (fuzz/worker.py) for `--seconds` (FUZZ_SECONDS in
`make fuzz`), on one core, from a corpus seeded with the published samples in
../shared/conformance (skipped, saying so, when absent), examples/ and fuzz/seeds/. Inputs the
fuzzer finds interesting are kept in `<work>/corpus/<reader>` for the next run; crashing inputs
go to `<work>/crashes/<reader>`. The merged report, `fuzz-results.json`, gives the inputs tried
per reader and in total, the seconds, and each distinct crash site with one example. Exits 1
when any crash site was found or a worker died.

`python -m fuzz --replay READER FILE...` reads saved inputs again and shows each traceback.
"""

import argparse
import hashlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from fuzz.corpus import seeds_for
from fuzz.crashes import EXAMPLE_PREFIX, REPO
from fuzz.targets import TARGETS, run_one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=300, help="per reader")
    parser.add_argument("--readers", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    parser.add_argument("--work", type=Path, default=REPO / ".fuzz")
    parser.add_argument("--out", type=Path, default=REPO / "fuzz-results.json")
    parser.add_argument("--replay", nargs="+", metavar=("READER", "FILE"))
    args = parser.parse_args()
    if args.replay:
        return _replay(args.replay[0], [Path(name) for name in args.replay[1:]])

    started = time.monotonic()
    reports = [_run_reader(reader, args.seconds, args.work) for reader in args.readers]
    results = {
        "inputs": sum(report["inputs"] for report in reports),
        "seconds": round(time.monotonic() - started, 1),
        "seconds_per_reader": args.seconds,
        "crash_sites": [
            {"reader": report["reader"], **site}
            for report in reports
            for site in report["crash_sites"]
        ],
        "readers": reports,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for report in reports:
        print(
            f"{report['reader']:8} {report['inputs']:>10,} inputs in {report['seconds']:>6} s, "
            f"{len(report['crash_sites'])} crash sites"
        )
    for site in results["crash_sites"]:
        print(
            f"CRASH {site['reader']}: {site['exception']} at {site['where']} -> {site['example']}"
        )
    print(
        f"total    {results['inputs']:>10,} inputs in {results['seconds']:>6} s, "
        f"{len(results['crash_sites'])} crash sites; report in {args.out}"
    )
    return 1 if results["crash_sites"] else 0


def _replay(reader: str, files: list[Path]) -> int:
    """Run saved inputs through one reader; print the traceback of each that still crashes."""
    crashed = 0
    for path in files:
        try:
            run_one(TARGETS[reader], path.read_bytes())
        except Exception:
            crashed += 1
            print(f"{path}: crashes")
            traceback.print_exc()
        else:
            print(f"{path}: answered")
    return 1 if crashed else 0


def _run_reader(reader: str, seconds: float, work: Path) -> dict[str, Any]:
    """Seed the reader's corpus, run its worker, and return the worker's report."""
    corpus = work / "corpus" / reader
    seeds = work / "seeds" / reader
    crashes = work / "crashes" / reader
    report_path = work / f"{reader}-report.json"
    for folder in (corpus, seeds, crashes):
        folder.mkdir(parents=True, exist_ok=True)
    for old in seeds.iterdir():
        old.unlink()
    inputs, notes = seeds_for(reader)
    for data in inputs:
        (seeds / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)
    for note in notes:
        print(note)
    report_path.unlink(missing_ok=True)
    log = work / f"{reader}-libfuzzer.log"
    command = [
        sys.executable,
        "-m",
        "fuzz.worker",
        reader,
        str(corpus),
        str(seeds),
        f"--seconds={seconds}",
        f"--report={report_path}",
        f"--crashes={crashes}",
    ]
    with log.open("wb") as output:
        finished = subprocess.run(
            command,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=seconds + 120,
            check=False,
        )
    report: dict[str, Any] = (
        json.loads(report_path.read_text())
        if report_path.exists()
        else {"reader": reader, "inputs": 0, "seconds": 0, "crash_sites": []}
    )
    if finished.returncode != 0:
        artifacts = sorted(
            str(p) for p in crashes.iterdir() if not p.name.startswith(EXAMPLE_PREFIX)
        )
        report["crash_sites"].append(
            {
                "where": "worker",
                "exception": f"worker exited with {finished.returncode} (hang or out of memory)",
                "message": f"see {log}",
                "inputs": 1,
                "example": artifacts[-1] if artifacts else "",
                "example_preview": "",
            }
        )
    return report


if __name__ == "__main__":
    sys.exit(main())

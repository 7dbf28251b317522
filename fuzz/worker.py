"""One reader under atheris (libFuzzer) for a fixed time: `python -m fuzz.worker TARGET ...`.

The fuzz function catches every exception itself, records its site and carries on, so one run
finds every crash site instead of stopping at the first. When the time is up it writes its
report (inputs tried, seconds, crash sites) as JSON and exits (it also writes it every few
seconds, so a worker that dies leaves its counts behind); `python -m fuzz` runs one worker
per reader and merges the reports. A hang or memory blow-up kills the worker instead: libFuzzer
saves that input under the crash folder and the parent reports the worker's death.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import atheris

from fuzz.corpus import MAX_INPUT_BYTES
from fuzz.crashes import CrashLog
from fuzz.mutators import mutate_hl7, mutate_json

with atheris.instrument_imports(include=["services.ingest", "schemas"]):
    from fuzz.targets import TARGETS, run_one

HANG_SECONDS = 10
REPORT_EVERY_SECONDS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("corpus", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--crashes", type=Path, required=True)
    args = parser.parse_args()

    target = TARGETS[args.target]
    crashes = CrashLog(args.crashes)
    started = time.monotonic()
    reported = started
    inputs = 0

    def report() -> None:
        nonlocal reported
        reported = time.monotonic()
        args.report.write_text(
            json.dumps(
                {
                    "reader": target.name,
                    "inputs": inputs,
                    "seconds": round(time.monotonic() - started, 1),
                    "crash_sites": crashes.sites(),
                },
                indent=2,
            )
        )

    def fuzz_one(data: bytes) -> None:
        nonlocal inputs
        inputs += 1
        try:
            run_one(target, data)
        except Exception as error:  # every escaping exception is a finding, not the end
            if crashes.record(error, data):
                report()
        now = time.monotonic()
        if now - reported >= REPORT_EVERY_SECONDS:
            report()
        if now - started >= args.seconds:
            report()
            sys.stdout.flush()
            os._exit(0)  # libFuzzer never returns from Fuzz(); leave without its teardown

    mutate = mutate_hl7 if target.structure == "hl7" else mutate_json

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        return mutate(data, max_size, seed, atheris.Mutate)

    args.crashes.mkdir(parents=True, exist_ok=True)
    report()
    libfuzzer_flags = [
        f"-max_len={MAX_INPUT_BYTES}",
        f"-timeout={HANG_SECONDS}",
        "-rss_limit_mb=2048",
        f"-max_total_time={int(args.seconds) + 60}",
        f"-artifact_prefix={args.crashes}/",
        "-print_final_stats=0",
    ]
    atheris.Setup(
        [sys.argv[0], *libfuzzer_flags, *map(str, args.corpus)], fuzz_one, custom_mutator=mutator
    )
    atheris.Fuzz()


if __name__ == "__main__":
    main()

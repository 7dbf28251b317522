"""Replay throughput and memory: the classifier engine over a generated year of results (36 a
patient, 10,000 patients by default), beside the decode rates of the same events (pydantic
validation, the part of replay that is not the engine, and plain json.loads), on one core; the
bytes replay holds per result held, in a fresh process; then whether memory grows with
patients rather than events.

Run with `make bench` (figures merged into bench-results.json, each issue 17 target beside its
figure). BENCH_REPLAY_RESULTS sets the size (a hospital year: `BENCH_REPLAY_RESULTS=10000000
BENCH_REPLAY_ROUNDS=3`, about 20 minutes), BENCH_RESULTS_PER_PATIENT the results a patient has
in the year and BENCH_REPLAY_ROUNDS the rounds the rates are the best of (default 5).
"""

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from benchmarks.results import record
from schemas import LabResult, stable_event_id
from services.classifier.engine import History
from services.classifier.rules import load_rules
from services.ingest.codes import FeedContext
from services.ingest.treatments import load_treatment_table
from services.tools.replay import Summary, replay

RESULTS = int(os.environ.get("BENCH_REPLAY_RESULTS", "360000"))
PER_PATIENT = int(os.environ.get("BENCH_RESULTS_PER_PATIENT", "36"))  # a year's worth
ROUNDS = int(os.environ.get("BENCH_REPLAY_ROUNDS", "5"))
START = datetime(2025, 11, 1, 8, 0, tzinfo=UTC)
TARGETS = {
    "replay_results_per_s": ">= 60000",
    "replay_share_of_decode_rate": ">= 0.5",
    "replay_bytes_per_held_result": "<= 200",
}
# One lab result as ingest publishes it, in the JSON of LabResult.model_dump_json(): written
# from this template, 10 M results take a minute or two rather than half an hour of models.
LINE = (
    '{{"schema_version":1,"event_id":"{eid}","source":"json","patient":{{"identifier":'
    '{{"authority":"BENCH","mrn":"{mrn}"}},"birth_date":"{born}"}},"result_id":"{rid}",'
    '"replaces_result_id":null,"code":{{"system":"http://loinc.org","code":"777-3",'
    '"display":null}},"count":{{"value_10e9_per_l":{value},"comparator":null,'
    '"original_value":"{value}","original_unit":"10*9/L"}},"status":"final",'
    '"abnormal_flags":[],"location":null,"collected_at":"{at}","verified_at":"{verified}",'
    '"received_at":"{received}"}}\n'
)


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(path: Path, patients: int, years: int = 1) -> int:
    """`years` of results, in arrival order across patients; 2 % of patients run low for weeks."""
    rng = random.Random(7)
    mrns = [f"{n:06d}" for n in range(patients)]
    born = [date(1940 + n % 80, 1 + n % 12, 1 + n % 28).isoformat() for n in range(patients)]
    count = 0
    with path.open("w") as out:
        for step in range(PER_PATIENT * years):
            day = START + timedelta(days=step * 365 / PER_PATIENT)
            times = [  # collected, verified 40 minutes later, received a minute after that
                (_time(at), _time(at + timedelta(minutes=40)), _time(at + timedelta(minutes=41)))
                for at in (day + timedelta(minutes=m) for m in range(600))
            ]
            lines = []
            for n in range(patients):
                low = n % 50 == 0
                value = rng.uniform(3, 40) if low else rng.uniform(120, 400)
                rid = f"{mrns[n]}-{step}"
                at, verified, received = times[n % 600]
                lines.append(
                    LINE.format(
                        eid=stable_event_id("bench", rid),
                        mrn=mrns[n],
                        born=born[n],
                        rid=rid,
                        value=f"{value:.1f}",
                        at=at,
                        verified=verified,
                        received=received,
                    )
                )
            out.writelines(lines)
            count += len(lines)
    return count


def _per_second(events: int, *runs: Callable[[], None]) -> list[float]:
    """Events per second of CPU time for each of `runs`, the best of ROUNDS rounds, the runs
    taking turns within a round: this is a shared, noisy machine more often than not, and a
    slow spell should not fall on one of the rates compared only."""
    best = [float("inf")] * len(runs)
    for _ in range(ROUNDS):
        for n, run in enumerate(runs):
            started = time.process_time()
            run()
            best[n] = min(best[n], time.process_time() - started)
    return [events / seconds for seconds in best]


def _replay_once(path: Path, histories: dict[str, History] | None = None) -> None:
    context = FeedContext(received_at=datetime.now(UTC), local_zone=UTC)
    summary = Summary()
    rules, treatments = load_rules(), load_treatment_table()
    for _ in replay([path], rules, treatments, context, summary, histories):
        pass
    if not summary.events or summary.rejected:
        raise RuntimeError("the generated events did not replay: " + "; ".join(summary.lines()))


def _peak_rss_kb() -> int:
    """This process's peak RSS. VmHWM, where Linux has it: ru_maxrss survives exec, so a child
    would report its parent's peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def held_memory(path: str) -> None:
    """In a fresh interpreter (see _fresh_replay): one replay of `path`, printing as JSON the peak
    RSS it added, the results its histories hold at the end and its CPU seconds."""
    load_rules(), load_treatment_table()  # loaded before measuring: not what replay holds
    histories: dict[str, History] = {}
    before = _peak_rss_kb()
    started = time.process_time()
    _replay_once(Path(path), histories)
    seconds = time.process_time() - started
    added = (_peak_rss_kb() - before) * 1024
    held = sum(len(history.values) for history in histories.values())
    print(json.dumps({"added_bytes": added, "held": held, "cpu_s": seconds}))


def _fresh_replay(path: Path) -> dict[str, float]:
    code = (
        "import sys; from benchmarks.replay_throughput import held_memory; held_memory(sys.argv[1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True
    )
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def throughput(scratch: Path) -> dict[str, float]:
    path = scratch / "year.ndjson"
    started = time.monotonic()
    events = generate(path, -(-RESULTS // PER_PATIENT))
    generated_s = time.monotonic() - started

    def validate() -> None:
        with path.open() as lines:
            for line in lines:
                LabResult.model_validate_json(line)

    def parse() -> None:
        with path.open() as lines:
            for line in lines:
                json.loads(line)

    fresh = _fresh_replay(path)
    rss_before = _peak_rss_kb()  # decoding keeps nothing: the replays' peak is theirs
    decode_rate, json_rate, replay_rate = _per_second(
        events, validate, parse, lambda: _replay_once(path)
    )
    peak_kb = _peak_rss_kb()
    return {
        "replay_patients": -(-RESULTS // PER_PATIENT),
        "replay_events": events,
        "replay_generate_s": round(generated_s, 1),
        "decode_results_per_s": round(decode_rate),
        "json_loads_results_per_s": round(json_rate),
        "replay_results_per_s": round(replay_rate),
        "replay_share_of_decode_rate": round(replay_rate / decode_rate, 3),
        "replay_cpu_s_fresh_process": round(fresh["cpu_s"], 1),
        "replay_held_results": fresh["held"],
        "replay_bytes_per_held_result": round(fresh["added_bytes"] / fresh["held"]),
        "replay_peak_rss_mb": round(peak_kb / 1024, 1),
        "replay_rss_growth_mb": round((peak_kb - rss_before) / 1024, 1),
    }


def memory_scaling(scratch: Path) -> dict[str, float]:
    """Replay memory for 2,000 patients over one and three years (the rules forget beyond
    400 days) and for 4,000 patients over one year: it should follow patients, not events."""
    figures = {}
    for patients, years in ((2000, 1), (2000, 3), (4000, 1)):
        path = scratch / f"{patients}-{years}.ndjson"
        generate(path, patients, years)
        key = f"replay_rss_growth_mb_{patients}_patients_{years}y"
        figures[key] = round(_fresh_replay(path)["added_bytes"] / 2**20, 1)
    return figures


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        record(throughput(Path(scratch)) | memory_scaling(Path(scratch)), TARGETS)


if __name__ == "__main__":
    main()

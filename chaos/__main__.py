"""`python -m chaos` (`make chaos`): run the chaos plan, write chaos-results.json, exit 1 unless
every patient was paged and nobody twice for the same alert; the services' logs and state
(the notifier's store with its audit trail) are then kept for a look.

Parameters by option or environment: --patients (CHAOS_PATIENTS, 500), --kills per service
(CHAOS_KILLS, 20), --classifier-kills (CHAOS_CLASSIFIER_KILLS, as --kills), --seed (CHAOS_SEED,
12). KAFKA_BOOTSTRAP_SERVERS, if set, names the broker; otherwise one is started for the run.

`--failover` (`make failover`) runs `chaos.failover` instead: a three-node Apache Kafka, three
classifiers and two notifiers, the leader broker, a classifier and a notifier SIGKILLed;
--patients (60 there) and --results (failover-results.json) apply.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from chaos import ChaosFailure
from chaos.harness import REPO, Plan, run_chaos
from services.kafka.broker import provide_broker
from services.notifier.delivery.channels.webhook_receiver import log as receiver_log


def _plan(argv: list[str] | None) -> tuple[Plan, Path]:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    environ = os.environ.get
    parser.add_argument("--patients", type=int, default=int(environ("CHAOS_PATIENTS", "500")))
    parser.add_argument(
        "--kills",
        type=int,
        default=int(environ("CHAOS_KILLS", "20")),
        help="SIGKILLs of ingest and of the notifier",
    )
    parser.add_argument(
        "--classifier-kills",
        type=int,
        default=int(environ("CHAOS_CLASSIFIER_KILLS", "-1")),
        help="SIGKILLs of the classifier (default: as --kills)",
    )
    parser.add_argument("--seed", type=int, default=int(environ("CHAOS_SEED", "12")))
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument(
        "--failover",
        action="store_true",
        help="instead: 3-node Apache Kafka, 3 classifiers, 2 notifiers; kill the leader broker, "
        "a classifier, a notifier (chaos.failover); writes failover-results.json",
    )
    args = parser.parse_args(argv)
    if args.failover:
        from chaos.failover import main as failover

        patients = args.patients if "--patients" in (argv or sys.argv) else 60
        sys.exit(failover(patients, args.results or REPO / "failover-results.json"))
    args.results = args.results or REPO / "chaos-results.json"
    classifier_kills = args.kills if args.classifier_kills < 0 else args.classifier_kills
    kills = {"ingest": args.kills, "classifier": classifier_kills, "notifier": args.kills}
    return Plan(patients=args.patients, kills=kills, seed=args.seed), args.results


def main(argv: list[str] | None = None) -> int:
    plan, results_path = _plan(argv)
    receiver_log.setLevel(logging.ERROR)  # no line per page received: there are hundreds
    workdir = Path(tempfile.mkdtemp(prefix="plateletwatch-chaos-"))
    try:
        with provide_broker(
            os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
            requested=os.environ.get("PLATELETWATCH_BROKER"),
        ) as broker:
            results = run_chaos(plan, workdir, broker)
    except ChaosFailure as failure:
        print(f"chaos: {failure}", file=sys.stderr)
        print(f"chaos: the services' logs and state are kept in {workdir}", file=sys.stderr)
        return 1
    results.write(results_path)
    print(json.dumps(results.figures(), indent=2))
    if results.lost_patients or results.duplicates:
        print(f"chaos: the services' logs and state are kept in {workdir}", file=sys.stderr)
        return 1
    shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

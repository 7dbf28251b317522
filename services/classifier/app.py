"""The classifier's composition root: its rules, faust's working directory, then the worker.

`plateletwatch classifier` calls `run_classifier` once the topics are verified; it returns when
the worker stops. A rules file that cannot be read or validated raises before anything starts.
"""

from services.classifier.rules import load_rules
from services.classifier.worker import create_app, run_worker
from services.config import Settings
from services.kafka.fetch_wait import wait_at_most


def run_classifier(settings: Settings, bootstrap_servers: str) -> int:
    rules = load_rules(settings.classifier_rules_file)
    settings.classifier_data_dir.mkdir(parents=True, exist_ok=True)  # faust's working files
    app = create_app(settings, bootstrap_servers, rules)
    wait_at_most(app, settings.classifier_fetch_max_wait_seconds)
    run_worker(app, settings.log_level)
    return 0

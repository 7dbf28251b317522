"""The classifier's composition root: its rules, then the worker process.

`plateletwatch classifier` calls `run_classifier` once the topics are verified; it returns when
the worker stops. A rules file that cannot be read or validated raises before anything starts.
"""

from services.classifier.rules import load_rules
from services.classifier.service import ClassifierService, run_service
from services.config import Settings


def run_classifier(settings: Settings, bootstrap_servers: str) -> int:
    run_service(
        ClassifierService(settings, bootstrap_servers, load_rules(settings.classifier_rules_file))
    )
    return 0

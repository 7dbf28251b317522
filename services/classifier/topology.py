"""Names of the classifier's state changelog and the internal topic faust needs.

Kept free of faust so `plateletwatch topics` can create them before any worker starts: the
changelog must have exactly as many partitions as the topics that feed it (a patient's record
lives on the partition of their events). The changelog keeps the name faust gave its table's,
so a deployment upgraded from the faust table keeps its patients' histories.
"""

PATIENT_STATE_TABLE = "patient-state"


def changelog_topic(app_id: str, table: str) -> str:
    """<app id>-<table>-changelog, as faust named a table's changelog."""
    return f"{app_id}-{table}-changelog"


def leader_topic(app_id: str) -> str:
    """faust's single-partition topic used to elect the partition-assignment leader."""
    return f"{app_id}-__assignor-__leader"

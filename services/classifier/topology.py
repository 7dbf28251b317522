"""Names of the classifier's faust tables and the internal topics faust needs.

Kept free of faust so `plateletwatch topics` can create them before any worker starts: a table's
changelog must have exactly as many partitions as the topic that feeds it.
"""

PATIENT_STATE_TABLE = "patient-state"


def changelog_topic(app_id: str, table: str) -> str:
    """faust's naming: <app id>-<table>-changelog."""
    return f"{app_id}-{table}-changelog"


def leader_topic(app_id: str) -> str:
    """faust's single-partition topic used to elect the partition-assignment leader."""
    return f"{app_id}-__assignor-__leader"

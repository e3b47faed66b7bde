"""A training job's statuses, as SageMaker names them; the last three are final."""

STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})

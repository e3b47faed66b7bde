"""The one Powertools logger; its level and service name come from POWERTOOLS_* variables.

Request headers hold client secrets: nothing in the Factory passes them to the logger.
"""

from aws_lambda_powertools import Logger

logger = Logger()

# The keys every log line of a job's work carries (never an API key id or value).
JOB_KEYS = ("job_name", "tenant")


def for_job(job_name: str | None = None, tenant: str | None = None) -> None:
    """From here on, log lines name this job and its owner's tenant.

    Both keys are replaced, never left over from an earlier job or invocation of a warm
    container; a value not given is dropped.
    """
    logger.remove_keys(list(JOB_KEYS))
    keys = {"job_name": job_name, "tenant": tenant}
    logger.append_keys(**{name: value for name, value in keys.items() if value})

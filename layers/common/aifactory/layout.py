"""Where a job's staged dataset lives in the data bucket, and in what form."""

CONTENT_TYPE = "application/jsonlines"


def dataset_prefix(job_name: str) -> str:
    return f"datasets/{job_name}/"


def shard_key(job_name: str, number: int) -> str:
    return f"{dataset_prefix(job_name)}train/part-{number:05d}.jsonl"


def manifest_key(job_name: str) -> str:
    return f"{dataset_prefix(job_name)}manifest.json"

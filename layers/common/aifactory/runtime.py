"""What a handler needs, built once per container from the settings."""

import functools
from dataclasses import dataclass

from aifactory.adapters import Batch, Queues, SecretBox, Storage, Training
from aifactory.egress import HttpClient
from aifactory.settings import Settings, get_settings
from aifactory.store import JobStore


@dataclass
class Runtime:
    settings: Settings
    store: JobStore
    secrets: SecretBox
    storage: Storage
    training: Training
    queues: Queues
    http: HttpClient
    batch: Batch


def build_runtime(settings: Settings) -> Runtime:
    return Runtime(
        settings=settings,
        store=JobStore(settings.jobs_table, settings.owner_counts_table),
        secrets=SecretBox(settings.kms_key_id),
        storage=Storage(settings.data_bucket),
        training=Training(),
        queues=Queues(),
        http=HttpClient(
            allow_private=settings.allow_private_urls,
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
            # One keep-alive connection for each page staging keeps in flight.
            pool_maxsize=max(10, settings.staging_concurrency),
        ),
        batch=Batch(settings.batch_job_queue),
    )


@functools.cache
def get_runtime() -> Runtime:
    return build_runtime(get_settings())


def reset() -> None:
    """Forget the cached settings, clients and runtime (tests and the local Factory)."""
    from aifactory import aws, tenants

    tenants.forget()
    get_settings.cache_clear()
    get_runtime.cache_clear()
    aws.client.cache_clear()
    aws.create_only_s3.cache_clear()
    aws.resource.cache_clear()

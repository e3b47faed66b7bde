"""What the local Factory keeps in its state dir between runs, and the lock that gives one
Factory at a time the use of a state dir.

    <state>/lock              held (flock) while a Factory runs; names its process
    <state>/api-keys.json     the API keys (0600): a generated key is reused on the next start
    <state>/aws.pickle        the emulated AWS account: S3 objects, DynamoDB items, SQS
                              messages, the KMS key, the training logs and metrics (moto's
                              backends, pickled on stop)
    <state>/resources.json    the names of the stack's resources in that account
    <state>/sagemaker.json    the training jobs, as DescribeTrainingJob shows them
    <state>/batch.json        the training queue's service jobs and the tenants' usage

The account is saved when the Factory stops (Ctrl-C, SIGTERM); a Factory that was killed
outright comes back as it was at its previous clean stop. `--fresh` starts from nothing.
"""

import contextlib
import fcntl
import io
import json
import os
import pickle
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# The services the Factory provisions; their moto backends hold the whole account.
SERVICES = ("s3", "dynamodb", "sqs", "kms", "logs", "cloudwatch")
FORMAT = 1

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
_PRIVATE_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    # The mode is given whatever the umask, and to a temporary left by an earlier crash.
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read (0600), atomically: it holds API keys."""
    _write_atomic(path, data, mode=0o600)


# -- the lock ---------------------------------------------------------------------------------
class StateDirInUse(RuntimeError):
    pass


class StateLock:
    """An exclusive flock on <state>/lock, released when the process ends whichever way."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> "StateLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise StateDirInUse(
                f"the state dir {self.path.parent} is in use by another local Factory "
                f"(pid {holder}); stop that one first, or give this one its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None


# -- API keys ---------------------------------------------------------------------------------
def load_api_keys(state_dir: Path) -> dict[str, str] | None:
    path = state_dir / "api-keys.json"
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        isinstance(keys, dict)
        and keys
        and all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in keys.items())
    ):
        return dict(keys)
    return None


def save_api_keys(state_dir: Path, keys: dict[str, str]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(keys, indent=2) + "\n").encode()
    _write_atomic(state_dir / "api-keys.json", data, mode=0o600)


# -- the emulated account ---------------------------------------------------------------------
class _Pickler(pickle.Pickler):
    """Locks inside moto's models are saved as new, unlocked locks."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _LOCK_TYPES):
            return (type(obj) if isinstance(obj, type(threading.RLock())) else threading.Lock, ())
        if isinstance(obj, _PRIVATE_KEY_TYPES):  # KMS keys' asymmetric halves, as PEM
            pem = obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            return (_private_key, (pem,))
        return NotImplemented


def _private_key(pem: bytes) -> Any:
    return serialization.load_pem_private_key(pem, password=None)


def _region_backends() -> list[tuple[str, str, str, Any]]:
    """(service, account, region, backend) for every backend moto has created."""
    from moto.backends import get_backend

    found = []
    for service in SERVICES:
        backends = get_backend(service)  # type: ignore[call-overload]
        for account, regions in list(backends.items()):
            for region in list(regions.keys()):
                found.append((service, account, region, regions[region]))
    return found


def save_account(state_dir: Path, resources: dict[str, str]) -> None:
    """Pickle moto's backends (call while nothing else uses them) and the resource names."""
    snapshot = {
        "format": FORMAT,
        "backends": [
            (service, account, region, backend.__dict__)
            for service, account, region, backend in _region_backends()
        ],
    }
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(snapshot)
    _write_atomic(state_dir / "aws.pickle", buffer.getvalue(), mode=0o600)
    _write_atomic(
        state_dir / "resources.json", (json.dumps(resources, indent=2) + "\n").encode(), 0o600
    )


def load_account(state_dir: Path) -> dict[str, str] | None:
    """Put a saved account back into moto's backends; returns the resource names, or None
    when there is nothing (usable) to restore."""
    from moto.backends import get_backend

    try:
        resources = json.loads((state_dir / "resources.json").read_text(encoding="utf-8"))
        # The state dir is this user's own, written by save_account above.
        snapshot = pickle.loads((state_dir / "aws.pickle").read_bytes())  # noqa: S301
    except FileNotFoundError:
        return None
    except Exception as exc:  # e.g. saved by another moto version
        raise RuntimeError(
            f"cannot restore the state saved in {state_dir} ({type(exc).__name__}: {exc}); "
            "start with --fresh to begin anew"
        ) from None
    if not isinstance(snapshot, dict) or snapshot.get("format") != FORMAT:
        return None
    for service, account, region, state in snapshot["backends"]:
        backend = get_backend(service)[account][region]  # type: ignore[call-overload]
        backend.__dict__.clear()
        backend.__dict__.update(state)
        if service == "sqs":
            _release_in_flight(backend)
    return dict(resources)


def _release_in_flight(backend: Any) -> None:
    """Messages received by the previous run are visible again at once: the invocations that
    held them ended with it (staging resumes now, not after the visibility timeout)."""
    for queue in list(getattr(backend, "queues", {}).values()):
        for message in list(getattr(queue, "_messages", [])):
            message.visible_at = 0.0


def save_jobs(state_dir: Path, jobs: list[dict[str, Any]]) -> None:
    data = (json.dumps({"format": FORMAT, "jobs": jobs}, indent=1) + "\n").encode()
    _write_atomic(state_dir / "sagemaker.json", data, 0o600)


def load_jobs(state_dir: Path) -> list[dict[str, Any]]:
    try:
        saved = json.loads((state_dir / "sagemaker.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        return []
    return [job for job in saved.get("jobs") or [] if isinstance(job, dict)]


def save_batch(state_dir: Path, state: dict[str, Any]) -> None:
    """The local Batch's service jobs and the shares' usage."""
    data = (json.dumps({"format": FORMAT, **state}, indent=1) + "\n").encode()
    _write_atomic(state_dir / "batch.json", data, 0o600)


def load_batch(state_dir: Path) -> dict[str, Any]:
    try:
        saved = json.loads((state_dir / "batch.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        return {}
    return saved


SAVED_FILES = ("aws.pickle", "resources.json", "sagemaker.json", "batch.json")


def forget(state_dir: Path) -> None:
    """--fresh: drop the saved account and jobs (the API keys stay)."""
    import shutil

    for name in SAVED_FILES:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()
    shutil.rmtree(state_dir / "jobs", ignore_errors=True)

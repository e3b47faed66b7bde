"""What the local Factory keeps in its state dir between runs, and the lock that gives one
Factory at a time the use of a state dir.

    <state>/lock              held (flock) while a Factory runs; names its process
    <state>/api-keys.json     the API keys (0600): a generated key is reused on the next start
    <state>/aws-port          the emulated AWS endpoint's port, reused on the next start when it
                              is free: presigned model links and `export AWS_ENDPOINT_URL=...`
                              name it
    <state>/ready.json        while the Factory runs: what a client needs to reach it (0600),
                              as --ready-file has it; aifactory-admin --local reads it
    <state>/state.bin         everything else, in one file (0600), format 2: the emulated AWS
                              account (S3 objects, DynamoDB items, SQS messages, the KMS key,
                              the API keys issued with aifactory-admin, the training logs and
                              metrics: moto's backends), the names of the stack's resources,
                              the training jobs (as DescribeTrainingJob shows them), and the
                              training queue's service jobs and the tenants' usage
    <state>/jobs/<job>/       each training job's working tree (its checkpoints, its log)

state.bin is written through (writethrough.py): before the API answers a request that changed
something, and within a second of a change the Factory made itself. It is replaced whole,
atomically (written beside, fsynced, renamed, the directory fsynced), and starts with a header
that names its format and the SHA-256 of what follows, so a restart after a crash (SIGKILL,
an OOM kill, a power cut) reads either the previous snapshot or the next, never a mixture.

Format 1 (before write-through: aws.pickle, resources.json, sagemaker.json and batch.json,
saved at a clean stop only) is read, and replaced by state.bin at the first snapshot. A state
dir of a format this version does not know (a newer one) is refused with a clear message.

The account is a pickle of moto's models (moto's objects have no other serialised form): the
state dir is the user's own, and state.bin is only unpickled once its header and checksum are
right. `--fresh` starts from nothing.
"""

import contextlib
import fcntl
import hashlib
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
# The admin CLI's keys live in API Gateway's (apigateway).
SERVICES = ("s3", "dynamodb", "sqs", "kms", "logs", "cloudwatch", "apigateway")
LEGACY_FORMAT = 1
FORMAT = 2
SNAPSHOT = "state.bin"
MAGIC = b"aifactory-local state\n"

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
_PRIVATE_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """The whole file or the previous one, also after a power cut: the data reaches the disk
    before the rename, and the rename before this returns."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    # The mode is given whatever the umask, and to a temporary left by an earlier crash.
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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


# -- the emulated AWS endpoint's port, and the ready file --------------------------------------
AWS_PORT = "aws-port"
READY = "ready.json"


def write_ready_file(path: Path, facts: dict[str, Any]) -> None:
    """The facts a client needs, API keys included: readable by this user only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, (json.dumps(facts, indent=2) + "\n").encode())


def load_aws_port(state_dir: Path) -> int | None:
    """The port the previous run's emulated AWS endpoint listened on, if it kept one."""
    try:
        port = int((state_dir / AWS_PORT).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def save_aws_port(state_dir: Path, port: int) -> None:
    _write_atomic(state_dir / AWS_PORT, f"{port}\n".encode())


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


class StateError(RuntimeError):
    """A state dir this version cannot read: the message says why, and the way out."""


def encode_snapshot(
    account: bytes, resources: dict[str, str], jobs: list[dict[str, Any]], batch: dict[str, Any]
) -> bytes:
    """A whole state.bin: header (magic, format, SHA-256 of the payload) and payload."""
    payload = pickle.dumps(
        {
            "format": FORMAT,
            "account": account,
            "resources": resources,
            "jobs": jobs,
            "batch": batch,
        },
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    digest = hashlib.sha256(payload).hexdigest().encode()
    return MAGIC + b"format %d\nsha256 %s\n" % (FORMAT, digest) + payload


def pickle_account() -> bytes:
    """moto's backends as bytes (call while nothing else changes them)."""
    buffer = io.BytesIO()
    backends = [
        (service, account, region, backend.__dict__)
        for service, account, region, backend in _region_backends()
    ]
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(backends)
    return buffer.getvalue()


def write_snapshot(state_dir: Path, data: bytes) -> None:
    _write_atomic(state_dir / SNAPSHOT, data, 0o600)
    for name in LEGACY_FILES:  # format 1, now replaced
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()


def _refuse(state_dir: Path, why: str) -> StateError:
    return StateError(
        f"cannot restore the state saved in {state_dir} ({why}); start with --fresh to begin "
        "anew (it keeps the API keys)"
    )


def read_snapshot(state_dir: Path) -> dict[str, Any] | None:
    """The saved state (format 2, or format 1 converted), or None for a new state dir.
    Raises StateError for a state dir that cannot be read as it was meant."""
    path = state_dir / SNAPSHOT
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _read_legacy(state_dir)
    if not data.startswith(MAGIC):
        raise _refuse(state_dir, f"{SNAPSHOT} is not a state file of aifactory-local")
    lines = data[len(MAGIC) :].split(b"\n", 2)
    if len(lines) < 3 or not lines[0].startswith(b"format ") or not lines[1].startswith(b"sha256 "):
        raise _refuse(state_dir, f"{SNAPSHOT} has a damaged header")
    try:
        version = int(lines[0][len(b"format ") :])
    except ValueError:
        raise _refuse(state_dir, f"{SNAPSHOT} has a damaged header") from None
    if version != FORMAT:
        raise _refuse(
            state_dir,
            f"{SNAPSHOT} is in format {version}, written by "
            f"{'a newer' if version > FORMAT else 'another'} version of aifactory-local; this "
            f"version reads formats {LEGACY_FORMAT} and {FORMAT}: run the version that wrote it",
        )
    payload = lines[2]
    if hashlib.sha256(payload).hexdigest().encode() != lines[1][len(b"sha256 ") :]:
        raise _refuse(state_dir, f"{SNAPSHOT} is damaged: its checksum does not match")
    try:
        # Checked above: the whole file, as this module wrote it in the user's own state dir.
        snapshot = pickle.loads(payload)  # noqa: S301
        backends = pickle.loads(snapshot["account"])  # noqa: S301
    except Exception as exc:  # e.g. saved with another moto version
        raise _refuse(state_dir, f"{type(exc).__name__}: {exc}") from None
    return {
        "backends": backends,
        "resources": dict(snapshot["resources"]),
        "jobs": list(snapshot["jobs"]),
        "batch": dict(snapshot["batch"]),
    }


def _read_legacy(state_dir: Path) -> dict[str, Any] | None:
    """Format 1: aws.pickle and resources.json, sagemaker.json, batch.json (clean stops)."""
    try:
        resources = json.loads((state_dir / "resources.json").read_text(encoding="utf-8"))
        # The state dir is this user's own, written by an earlier version of this module.
        snapshot = pickle.loads((state_dir / "aws.pickle").read_bytes())  # noqa: S301
    except FileNotFoundError:
        return None
    except Exception as exc:  # e.g. saved by another moto version
        raise _refuse(state_dir, f"{type(exc).__name__}: {exc}") from None
    if not isinstance(snapshot, dict) or snapshot.get("format") != LEGACY_FORMAT:
        found = snapshot.get("format") if isinstance(snapshot, dict) else None
        raise _refuse(state_dir, f"aws.pickle is in an unknown format ({found!r})")
    return {
        "backends": snapshot["backends"],
        "resources": dict(resources),
        "jobs": _legacy_json(state_dir / "sagemaker.json").get("jobs") or [],
        "batch": _legacy_json(state_dir / "batch.json"),
    }


def _legacy_json(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("format") != LEGACY_FORMAT:
        return {}
    return saved


def restore_account(backends: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    """Put saved backends back into moto's."""
    from moto.backends import get_backend

    for service, account, region, state in backends:
        backend = get_backend(service)[account][region]  # type: ignore[call-overload]
        backend.__dict__.clear()
        backend.__dict__.update(state)
        if service == "sqs":
            _release_in_flight(backend)


def _release_in_flight(backend: Any) -> None:
    """Messages received by the previous run are visible again at once: the invocations that
    held them ended with it (staging resumes now, not after the visibility timeout)."""
    for queue in list(getattr(backend, "queues", {}).values()):
        for message in list(getattr(queue, "_messages", [])):
            message.visible_at = 0.0


LEGACY_FILES = ("aws.pickle", "resources.json", "sagemaker.json", "batch.json")
SAVED_FILES = (SNAPSHOT, *LEGACY_FILES)


def forget(state_dir: Path) -> None:
    """--fresh: drop the saved account and jobs (the API keys and the AWS port stay)."""
    import shutil

    for name in SAVED_FILES:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()
    shutil.rmtree(state_dir / "jobs", ignore_errors=True)

"""The callback receiver of the demo, the tests and the commands the Factory prints: the
client's own (aifactory_client.receiver), the one `aifactory listen` runs. There is one
receiver, so a callback it refuses is answered 401 whichever way it was started.

From a shell this is `aifactory listen --headers`: it prints each callback with its headers
(secret values masked), and with the job's signing secret it verifies each one (Standard
Webhooks), answering 401 to one that does not verify:

    python -m aifactory_local.callback_receiver --port 8901 --secret whsec_...
"""

import sys

from aifactory_client.receiver import (
    CallbackReceiver,
    ReceivedCallback,
    masked_headers,
    verify,
)

__all__ = ["CallbackReceiver", "ReceivedCallback", "main", "masked_headers", "verify"]


def main(argv: list[str] | None = None) -> None:
    """`aifactory listen --headers` with these arguments (--host, --port, --secret, ...);
    exits with its status."""
    from aifactory_client.cli import main as aifactory

    args = list(sys.argv[1:] if argv is None else argv)
    aifactory.main(
        ["listen", "--headers", *args], prog_name="python -m aifactory_local.callback_receiver"
    )


if __name__ == "__main__":
    main()

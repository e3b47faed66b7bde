"""A trainer that trains until it is told to stop, and says in its log that SIGTERM came:
what a real training container does with SageMaker's stop signal (save, then exit)."""

import signal
import sys
import time


def on_term(signum: int, _frame: object) -> None:
    print("SIGTERM received; saving a checkpoint and exiting", flush=True)
    sys.exit(143)


signal.signal(signal.SIGTERM, on_term)
print("training until stopped", flush=True)
while True:
    time.sleep(0.1)

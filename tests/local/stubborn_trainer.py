"""A trainer that writes nothing while it trains and ignores every signal it can (SIGTERM,
SIGHUP, SIGPIPE, SIGINT): only SIGKILL ends it, as a hung training container."""

import signal
import time

for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGINT):
    signal.signal(signum, signal.SIG_IGN)
while True:
    time.sleep(0.1)

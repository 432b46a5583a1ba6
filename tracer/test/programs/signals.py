"""Prints each signal it receives; exits 0 on SIGTERM. Used to check rbinder forwards signals."""
import signal
import sys
import time

NAMES = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTERM"]


def handler(signum, _frame):
    name = signal.Signals(signum).name
    print("GOT", name, flush=True)
    if name == "SIGTERM":
        sys.exit(0)


for n in NAMES:
    signal.signal(getattr(signal, n), handler)
print("READY", flush=True)
deadline = time.time() + 60
while time.time() < deadline:
    time.sleep(0.05)
sys.exit(3)

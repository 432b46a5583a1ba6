"""Prints what a program can see of how it was started: argv, environment, stdin, open fds,
signal dispositions. Traced and untraced runs must print the same."""
import os
import signal
import sys

print("ARGV", sys.argv[1:])
for k in sorted(os.environ):
    if k not in ("_",):
        print("ENV", k, os.environ[k])
print("STDIN", sys.stdin.read())
print("FDS", sorted(int(f) for f in os.listdir("/proc/self/fd")))
print("SIGPIPE", signal.getsignal(signal.SIGPIPE))
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith(("SigBlk", "SigIgn")):
            print(line.strip())
sys.stdout.flush()
sys.exit(int(os.environ.get("EXIT_WITH", "0")))

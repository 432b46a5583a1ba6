"""Threads hammering socket and pipe syscalls while rbinder patches their call sites
(docs/fast-path.md, "Patched call sites"), with a fork on the way: every byte must arrive as
sent, in every thread, in the parent and in the child. Runs for SECONDS (long enough for
rbinder's Node to boot, which waits while the program is busy, and for the verdicts to arrive).
Prints "OK <messages>" and exits 0, or prints what went wrong and exits 1.

    python3 socket_storm.py [THREADS] [SECONDS]
"""
import os
import socket
import sys
import threading
import time

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 16
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
FORK_AFTER = SECONDS / 2
SIZE = 64


def exchange(tag, seconds, errors, counts):
    """send/recv on a socketpair and write/read on a pipe, each message checked."""
    a, b = socket.socketpair()
    r, w = os.pipe()
    end = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < end:
            n += 1
            msg = f"{tag}:{n}:".encode().ljust(SIZE, b"x")
            a.sendall(msg)
            got = b""
            while len(got) < SIZE:
                chunk = b.recv(SIZE - len(got))
                if not chunk:
                    raise RuntimeError("socket closed early")
                got += chunk
            os.write(w, got)
            back = b""
            while len(back) < SIZE:
                back += os.read(r, SIZE - len(back))
            if back != msg:
                errors.append(f"{tag} round {n}: sent {msg!r}, got {back!r}")
                return
            if n % 50 == 0:
                time.sleep(0.002)  # bursts: the threads overlap without taking every CPU of the test machine
    except Exception as err:  # noqa: BLE001 - reported, and the run fails
        errors.append(f"{tag}: {err!r}")
    finally:
        counts.append(n)
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def main():
    errors, counts = [], []
    threads = [threading.Thread(target=exchange, args=(f"t{i}", SECONDS, errors, counts)) for i in range(THREADS)]
    for t in threads:
        t.start()
    # A fork while the other threads are in their loops: the child has only this thread, and a
    # copy of whatever call sites were patched (or being patched) at that moment.
    time.sleep(FORK_AFTER)
    pid = os.fork()
    if pid == 0:
        child_errors = []
        exchange("child", SECONDS / 4, child_errors, [])
        for e in child_errors:
            print(e, flush=True)
        os._exit(1 if child_errors else 0)
    for t in threads:
        t.join()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        errors.append(f"fork child: exit status {status}")
    for e in errors:
        print(e, flush=True)
    if errors:
        sys.exit(1)
    print(f"OK {sum(counts)}", flush=True)


main()

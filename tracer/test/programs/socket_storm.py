"""Threads hammering socket and pipe syscalls while rbinder patches their call sites
(docs/fast-path.md, "Patched call sites"), with a fork half-way: every byte must arrive as sent,
in every thread, in the parent and in the child. Prints "OK <messages>" and exits 0, or prints
what went wrong and exits 1.

    python3 socket_storm.py [THREADS] [ROUNDS]
"""
import os
import socket
import sys
import threading

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 16
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
SIZE = 64


def exchange(tag, rounds, errors):
    """send/recv on a socketpair and write/read on a pipe, each message checked."""
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        for n in range(rounds):
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
    except Exception as err:  # noqa: BLE001 - reported, and the run fails
        errors.append(f"{tag}: {err!r}")
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def main():
    errors = []
    threads = [threading.Thread(target=exchange, args=(f"t{i}", ROUNDS, errors)) for i in range(THREADS)]
    for t in threads:
        t.start()
    # A fork while the other threads are in their loops: the child has only this thread, and a
    # copy of whatever call sites were patched (or being patched) at that moment.
    pid = os.fork()
    if pid == 0:
        child_errors = []
        exchange("child", ROUNDS // 4, child_errors)
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
    print(f"OK {THREADS * ROUNDS + ROUNDS // 4}", flush=True)


main()

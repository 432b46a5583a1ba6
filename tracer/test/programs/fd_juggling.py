"""A server that serves each connection through another descriptor than accept returned, so the
tracer's fd table must follow fcntl(F_DUPFD), dup2, dup and close_range.

Usage: python3 fd_juggling.py  (prints "LISTENING <port>", serves 4 connections, exits)
  connection 1: fcntl(F_DUPFD, 100), original closed, served on the copy
  connection 2: dup2 to 200, original closed, served on 200
  connection 3: dup, original closed, served on the copy
  connection 4: request read, then close_range over its descriptors: no response
"""
import fcntl
import os
import socket

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


def read_request(fd):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    print("LISTENING", srv.getsockname()[1], flush=True)
    for i in range(4):
        conn, _ = srv.accept()
        original = conn.detach()
        if i == 0:
            fd = fcntl.fcntl(original, fcntl.F_DUPFD, 100)
            os.close(original)
        elif i == 1:
            fd = os.dup2(original, 200)
            os.close(original)
        elif i == 2:
            fd = os.dup(original)
            os.close(original)
        else:
            fd = os.dup2(original, 300)
            read_request(fd)
            os.closerange(min(original, 300), 301)  # close_range(2) on Linux
            continue
        read_request(fd)
        os.write(fd, RESPONSE)
        os.close(fd)


main()

"""HTTP server that answers every request with the exact bytes it received for it (head and
body) as the response body, so a client can see what went over the wire after rbinder.

Usage: python3 raw_echo_server.py [PORT]  (0 = ephemeral). Prints "LISTENING <port>".
Keep-alive; a request's body is delimited by Content-Length (no body without it).
"""
import socket
import sys
import threading


def read_request(conn, buf):
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    head_end = buf.index(b"\r\n\r\n") + 4
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(buf) < head_end + length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    return buf[: head_end + length], buf[head_end + length :]


def serve(conn):
    buf = b""
    with conn:
        while True:
            request, buf = read_request(conn, buf)
            if request is None:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(request) + request)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    print("LISTENING", srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()

"""Sends HTTP requests in unusual ways to a raw_echo_server and prints, per request, one JSON line
{"sent": <base64 of the bytes this program wrote>, "received": <base64 of what the server got>}.

Usage: python3 inject_client.py MODE HOST:PORT
MODE:
  sndbuf       SO_SNDBUF 4096, a 200 KB request head (many headers) sent with one send()
  nonblocking  non-blocking socket, 200 KB head + 100 KB body, partial sends retried on select()
  writev       head and body in 64 iovecs with os.writev
  sendmsg      head and body in 64 iovecs with socket.sendmsg
  pieces       the head written in 7 small writes (os.write), with pauses
  keepalive    3 requests on one connection, each with its own body
  present      a request that already carries traceparent
  b3present    a request that already carries b3
  stubsized    SO_SNDBUF 4096, non-blocking, a 40 KB head + 100 KB body, partial sends retried
MODE:warm sends a small request on the same connection first and reports only the second one
(in fast mode the first asks the engine, which tells the stub the thread's context, so the stub
decides the second itself).
"""
import base64
import json
import os
import select
import socket
import sys
import time


def head(path, headers, body=b""):
    lines = [f"POST {path} HTTP/1.1", "Host: app.internal", "User-Agent: inject-client"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def filler(n_bytes):
    headers, size, i = [], 0, 0
    while size < n_bytes:
        value = f"{i:08d}" + "x" * 90
        headers.append((f"X-Filler-{i}", value))
        size += len(value) + 16
        i += 1
    return headers


def read_response(sock, buf=b""):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("connection closed before response")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    length = int([l for l in buf[:end].split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(buf) < end + length:
        buf += sock.recv(65536)
    return buf[end : end + length], buf[end + length :]


def report(sent, received):
    print(json.dumps({"sent": base64.b64encode(sent).decode(), "received": base64.b64encode(received).decode()}), flush=True)


def connect_plain(addr, sndbuf=None):
    host, port = addr.rsplit(":", 1)
    s = socket.socket()
    if sndbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    s.connect((host, int(port)))
    return s


def split(data, n):
    step = max(1, len(data) // n)
    return [data[i : i + step] for i in range(0, len(data), step)]


def connect_warm(addr, warm, sndbuf=None):
    s = connect_plain(addr, sndbuf)
    if warm:
        s.sendall(head("/warm", []))
        read_response(s)
    return s


def send_nonblocking(s, req):
    s.setblocking(False)
    off = 0
    while off < len(req):
        select.select([], [s], [])
        try:
            off += s.send(req[off:])
        except BlockingIOError:
            pass
    s.setblocking(True)


def main():
    mode, addr = sys.argv[1], sys.argv[2]
    mode, _, warm = mode.partition(":")
    connect = lambda addr, sndbuf=None: connect_warm(addr, warm == "warm", sndbuf)  # noqa: E731
    if mode == "stubsized":
        s = connect(addr, sndbuf=4096)
        body = bytes(i % 251 for i in range(100_000))
        req = head("/stubsized", filler(40_000), body) + body
        send_nonblocking(s, req)
        report(req, read_response(s)[0])
    elif mode == "sndbuf":
        s = connect(addr, sndbuf=4096)
        req = head("/sndbuf", filler(200_000))
        s.sendall(req)
        report(req, read_response(s)[0])
    elif mode == "nonblocking":
        s = connect(addr)
        body = bytes(i % 251 for i in range(100_000))
        req = head("/nonblocking", filler(200_000), body) + body
        send_nonblocking(s, req)
        report(req, read_response(s)[0])
    elif mode in ("writev", "sendmsg"):
        s = connect(addr)
        body = b"b" * 5000
        req = head(f"/{mode}", [("X-Mode", mode)], body) + body
        parts = split(req, 64)
        if mode == "writev":
            n = os.writev(s.fileno(), parts)
        else:
            n = s.sendmsg(parts)
        assert n == len(req), (n, len(req))
        report(req, read_response(s)[0])
    elif mode == "pieces":
        s = connect(addr)
        req = head("/pieces", [("X-A", "1"), ("X-B", "2")], b"hello")
        req += b"hello"
        for piece in split(req, 7):
            os.write(s.fileno(), piece)
            time.sleep(0.02)
        report(req, read_response(s)[0])
    elif mode == "keepalive":
        s = connect(addr)
        rest = b""
        for i in range(3):
            body = f"request {i}".encode()
            req = head(f"/keepalive/{i}", [], body) + body
            s.sendall(req)
            received, rest = read_response(s, rest)
            report(req, received)
    elif mode in ("present", "b3present"):
        s = connect(addr)
        header = ("traceparent", "00-11111111111111111111111111111111-2222222222222222-01") if mode == "present" else ("b3", "11111111111111111111111111111111-2222222222222222-1")
        req = head(f"/{mode}", [header])
        s.sendall(req)
        report(req, read_response(s)[0])
    else:
        raise SystemExit(f"unknown mode {mode}")


main()

"""An HTTP/1.1 server that starts child processes the way most runtimes do, with vfork: GET
/spawn runs `true` through os.posix_spawn (glibc's uses clone(CLONE_VM|CLONE_VFORK)) and
through subprocess.run (vfork since Python 3.10), then answers like GET /hello. The child shares
the parent's memory until it execs, the stub's regions included: rbinder must keep tracing the
parent afterwards, as its own process.

    python3 spawning_server.py [PORT]    (prints "LISTENING <port>")
"""
import http.server
import os
import shutil
import subprocess
import sys

TRUE = shutil.which("true")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/spawn":
            pid = os.posix_spawn(TRUE, [TRUE], os.environ)
            os.waitpid(pid, 0)
            subprocess.run([TRUE], check=True)
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
print(f"LISTENING {server.server_address[1]}", flush=True)
server.serve_forever()

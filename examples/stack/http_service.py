"""A pretend HTTP service (api, gateway) with a /health route."""
import http.server
import random
import sys
import threading
import time

name, port = sys.argv[1], int(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"ok": true}\n' if self.path == "/health" else b'{"hello": "world"}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print(f"{name}: {self.command} {self.path} -> 200", flush=True)


print(f"{name}: reading settings", flush=True)
time.sleep(0.4)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"{name}: listening on :{port}", flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
routes = ["/users", "/orders", "/orders/42", "/search?q=lamp", "/cart"]
while True:
    time.sleep(random.uniform(1, 4))
    ms = random.randint(2, 80)
    print(f"{name}: GET {random.choice(routes)} 200 {ms}ms", flush=True)
    if ms > 75:
        print(f"{name}: slow request ({ms}ms) over budget", file=sys.stderr, flush=True)

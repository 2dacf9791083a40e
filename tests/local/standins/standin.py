"""Test stand-in for an engine rank or the router (never used by product code).

`standin.py engine --port P ...`: rank 0 (SUPERNODE_RANK) serves /health, 200 once every other
rank has connected to SUPERNODE_LEADER_PORT; each process also starts a `sleep` grandchild so tests
can prove whole process groups are stopped. `standin.py router --port P ...`: /health 200, on the
config's ops port (`--config FILE`, server.metrics_port) too. Set STANDIN_FAIL=1 to exit with an error
at once; STANDIN_SIGNALS=FILE makes the router stand-in serve that file as /autoscaling/signals.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading


def main() -> None:
    role, args = sys.argv[1], sys.argv[2:]
    port = int(args[args.index("--port") + 1])
    if os.environ.get("STANDIN_FAIL"):
        print("standin: failing on purpose (bad device)", flush=True)
        sys.exit(3)
    subprocess.Popen(["sleep", "600"])  # a grandchild
    joined = threading.Event()
    if role == "engine":
        rank = int(os.environ["SUPERNODE_RANK"])
        world = int(os.environ["SUPERNODE_WORLD_SIZE"])
        rdzv = ("127.0.0.1", int(os.environ["SUPERNODE_LEADER_PORT"]))
        if rank != 0:
            for _ in range(200):
                try:
                    conn = socket.create_connection(rdzv)
                    break
                except OSError:
                    threading.Event().wait(0.05)
            conn.recv(1)  # blocks until the leader goes away
            sys.exit(1)
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(rdzv)
        srv.listen()

        def accept() -> None:
            peers = [srv.accept() for _ in range(world - 1)]
            joined.set()
            for c, _ in peers:
                c.recv(1)  # a worker went away: the world is broken
                os._exit(1)
        threading.Thread(target=accept, daemon=True).start()
    else:
        joined.set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = joined.is_set()
            body = b'{"status":"ok"}' if ok else b'{"status":"waiting for ranks"}'
            signals = os.environ.get("STANDIN_SIGNALS")  # router: /autoscaling/signals from this file
            if role == "router" and self.path == "/ready":  # the stand-in routes to whatever is started
                body = b'{"ready": true, "routable": 1000}'
            if role == "router" and signals and self.path == "/autoscaling/signals":
                with open(signals, "rb") as f:
                    body = f.read()
            self.send_response(200 if ok else 503)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    http.server.ThreadingHTTPServer.allow_reuse_address = True
    if role == "router" and "--config" in args:  # the real router's ops port: /metrics, /autoscaling/signals
        import yaml

        with open(args[args.index("--config") + 1]) as f:
            ops = int(((yaml.safe_load(f) or {}).get("server") or {}).get("metrics_port") or 0)
        if ops:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", ops), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()

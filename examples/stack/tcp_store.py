"""A pretend data store (db, cache, broker): listens on TCP and logs what it does."""
import random
import socket
import sys
import threading
import time

name, port = sys.argv[1], int(sys.argv[2])
print(f"{name}: loading data files", flush=True)
time.sleep(0.3)
server = socket.create_server(("127.0.0.1", port))
print(f"{name}: accepting connections on 127.0.0.1:{port}", flush=True)


def serve():
    while True:
        conn, addr = server.accept()
        print(f"{name}: connection from {addr[0]}:{addr[1]}", flush=True)
        conn.close()


threading.Thread(target=serve, daemon=True).start()
while True:
    time.sleep(random.uniform(3, 6))
    print(f"{name}: checkpoint complete, {random.randint(10, 900)} keys written", flush=True)

"""A pretend scheduler: runs periodic tasks against the api."""
import itertools
import random
import time
import urllib.request

TASKS = ["expire-sessions", "rollup-metrics", "send-digests", "prune-carts"]
print("scheduler: 4 periodic tasks registered", flush=True)
for tick in itertools.count(1):
    time.sleep(random.uniform(2, 5))
    task = random.choice(TASKS)
    try:
        with urllib.request.urlopen("http://127.0.0.1:18080/health", timeout=1) as reply:
            print(f"scheduler: run {tick}: {task} ok (api {reply.status})", flush=True)
    except OSError as exc:
        print(f"scheduler: run {tick}: {task} skipped, api unreachable ({exc})", flush=True)

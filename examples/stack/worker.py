"""A pretend queue worker: takes jobs from the broker and processes them."""
import itertools
import random
import sys
import time

name = sys.argv[1]
print(f"{name}: subscribed to queue 'jobs'", flush=True)
for job in itertools.count(1):
    time.sleep(random.uniform(1, 3))
    kind = random.choice(["resize-image", "send-email", "reindex", "export-csv"])
    if random.random() < 0.1:
        print(f"{name}: job {job} ({kind}) failed, will retry", file=sys.stderr, flush=True)
    else:
        print(f"{name}: job {job} ({kind}) done in {random.randint(5, 400)}ms", flush=True)

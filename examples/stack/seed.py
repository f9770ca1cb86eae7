"""A oneshot: seeds notification templates, then exits 0."""
import time

for template in ("welcome", "password-reset", "order-shipped"):
    time.sleep(0.2)
    print(f"notifier: seeded template '{template}'", flush=True)
print("notifier: 3 templates seeded", flush=True)

"""The startup summary line of SPEC 1.3, from how each boot start ended and the final states."""


def boot_summary(results, statuses, cancelled, elapsed):
    """`startup ok|incomplete|cancelled: N running, N done, N failed_start, N blocked (Ts)`.

    `results` maps each service the boot reached to `ok`, `failed` or `blocked`;
    `statuses` maps service names to their status once the boot is over. A start that
    succeeded counts by where the service is now: up is running, exited 0 is done, and
    anything else (a daemon that died since) is a failed start.
    """
    counts = {"running": 0, "done": 0, "failed_start": 0, "blocked": 0}
    for name, result in results.items():
        if result == "blocked":
            counts["blocked"] += 1
        elif result == "ok":
            status = statuses[name]
            key = {"running": "running", "ready": "running", "stopped": "done"}.get(status)
            counts[key or "failed_start"] += 1
        else:
            counts["failed_start"] += 1
    if cancelled:
        word = "startup cancelled"
    elif counts["failed_start"] or counts["blocked"]:
        word = "startup incomplete"
    else:
        word = "startup ok"
    return (f"{word}: {counts['running']} running, {counts['done']} done, "
            f"{counts['failed_start']} failed_start, {counts['blocked']} blocked "
            f"({elapsed:.2f}s)")

"""Live reload (SPEC 6.4): what differs between the running config and the file's.

No processes here: the runtime applies a `Diff`. A service counts as changed when its
loaded `ServiceConfig` differs in any field (`cmd`, `env`, `dependsOn`, `ready`, ...):
the comparison is on what the loader resolved, so whatever it reads into the config (the
contents of an `envFile`, once that key exists) is part of it. The settings the server
was started with and cannot change live (`KEPT`) stay as they were and are reported.
"""
from collections import namedtuple
from dataclasses import replace

from .config import ConfigError, load

# Config fields a reload never applies, with the key a user writes for each.
KEPT = {"bind": "session.bind", "token": "session.token", "logs_dir": "logs.dir",
        "buffer_size": "logs.bufferSize"}

Diff = namedtuple("Diff", "added removed changed unchanged ignored")
Diff.__doc__ = "Sorted service names of each kind, and the `KEPT` keys the file changed."


def read(path):
    """(config, None) of the file at `path`, or (None, the error as the CLI prints it)."""
    try:
        return load(path), None
    except ConfigError as exc:
        return None, f"Error: {exc}"


def compare(old, new, env_differs=lambda name, cfg: False):
    """The `Diff` from the running config `old` to the file's `new`. `env_differs(name,
    cfg)` says whether a service would now get another environment than the one it runs
    with although its entry is the same (what is read when the environment is built)."""
    before, after = old.services, new.services
    kept = [name for name in after if name in before]
    changed = {name for name in kept
               if after[name] != before[name] or env_differs(name, after[name])}
    return Diff(
        added=sorted(set(after) - set(before)),
        removed=sorted(set(before) - set(after)),
        changed=sorted(changed),
        unchanged=sorted(set(kept) - changed),
        ignored=[key for field, key in KEPT.items() if getattr(old, field) != getattr(new, field)])


def effective(old, new):
    """`new` with the `KEPT` settings of `old`: the config the runtime goes on with."""
    return replace(new, **{field: getattr(old, field) for field in KEPT})


def dependents(config, names):
    """Every service of `config` that depends on one of `names`, directly or not."""
    found, todo = set(), set(names)
    while todo:
        todo = {name for name, cfg in config.services.items()
                if name not in found and todo.intersection(cfg.depends_on)}
        found |= todo
    return found - set(names)


def result_data(diff):
    """The result data of `reload_config` (SPEC 6.4)."""
    return {"added": diff.added, "removed": diff.removed, "changed": diff.changed,
            "unchanged": diff.unchanged}


def describe(diff, restarted):
    """The `reload: ...` server lines of an applied diff."""
    lines = [f"reload: {kind} {', '.join(names)}" for kind, names in (
        ("added", diff.added), ("removed", diff.removed), ("changed", diff.changed),
        ("restarting dependents", sorted(restarted))) if names]
    lines.append(f"reload: {len(diff.unchanged)} unchanged" if lines
                 else "reload: no service changed")
    if diff.ignored:
        lines.append(f"reload: ignored (needs a server restart): {', '.join(diff.ignored)}")
    return lines

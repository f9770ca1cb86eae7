"""Dependency graph -> start waves (SPEC 3.1), and cycle detection that names the cycle.

Both functions take `deps`: a mapping of service name to the names it depends on. They are
iterative, so a long dependency chain cannot hit Python's recursion limit.
"""


def plan_waves(deps):
    """Group services into waves: a service sits one wave after its latest dependency.

    Wave 0 holds the services without dependencies; names are sorted inside each wave, so
    the same graph always gives the same plan. Raises ValueError on an unknown dependency
    or a cycle (the config loader reports both before planning).
    """
    graph = {name: set(needs) for name, needs in deps.items()}
    dependents = {name: [] for name in graph}
    for name, needs in graph.items():
        for need in needs:
            if need not in graph:
                raise ValueError(f"{name} depends on unknown service {need}")
            dependents[need].append(name)
    waiting = {name: len(needs) for name, needs in graph.items()}
    waves = []
    current = sorted(name for name, count in waiting.items() if count == 0)
    while current:
        waves.append(current)
        following = []
        for name in current:
            for dependent in dependents[name]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    following.append(dependent)
        current = sorted(following)
    if sum(len(wave) for wave in waves) != len(graph):
        raise ValueError("dependency cycle: " + " -> ".join(find_cycle(deps)))
    return waves


def find_cycle(deps):
    """Return one dependency cycle as `[a, b, c, a]`, or None when the graph has none.

    The search visits names in sorted order and the cycle is rotated to start at its
    smallest name, so the same config always reports the same cycle. Names that are not
    keys of `deps` are ignored (they cannot be part of a cycle).
    """
    graph = {name: sorted(set(needs)) for name, needs in deps.items()}
    finished = set()
    for root in sorted(graph):
        if root in finished:
            continue
        path = [root]
        on_path = {root}
        pending = [iter(graph[root])]
        while pending:
            for need in pending[-1]:
                if need in on_path:
                    cycle = path[path.index(need):]
                    start = cycle.index(min(cycle))
                    cycle = cycle[start:] + cycle[:start]
                    return cycle + [cycle[0]]
                if need in graph and need not in finished:
                    path.append(need)
                    on_path.add(need)
                    pending.append(iter(graph[need]))
                    break
            else:
                done = path.pop()
                on_path.discard(done)
                finished.add(done)
                pending.pop()
    return None

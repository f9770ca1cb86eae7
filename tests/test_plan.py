"""lib.plan: start waves (SPEC 3.1) and cycle detection."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.plan import find_cycle, plan_waves


@pytest.mark.parametrize(
    "deps, waves",
    [
        ({}, []),
        ({"b": [], "a": [], "c": []}, [["a", "b", "c"]]),
        ({"c": ["b"], "b": ["a"], "a": []}, [["a"], ["b"], ["c"]]),
        # diamond
        ({"top": ["left", "right"], "left": ["base"], "right": ["base"], "base": []},
         [["base"], ["left", "right"], ["top"]]),
        # a service sits one wave after its *latest* dependency, not its earliest
        ({"late": ["a", "c"], "a": [], "b": ["a"], "c": ["b"]}, [["a"], ["b"], ["c"], ["late"]]),
        # the SPEC 1.3 example
        ({"cache": [], "db": [], "api": ["db"], "worker": ["cache", "db"], "gateway": ["api", "worker"]},
         [["cache", "db"], ["api", "worker"], ["gateway"]]),
        # repeated dependencies count once
        ({"b": ["a", "a"], "a": []}, [["a"], ["b"]]),
    ],
)
def test_plan_waves(deps, waves):
    assert plan_waves(deps) == waves


def test_plan_waves_rejects_unknown_dependency():
    with pytest.raises(ValueError, match="unknown service ghost"):
        plan_waves({"a": ["ghost"]})


def test_plan_waves_rejects_cycle_and_names_it():
    with pytest.raises(ValueError, match=r"dependency cycle: a -> b -> a"):
        plan_waves({"a": ["b"], "b": ["a"], "c": []})


def test_long_chain_does_not_recurse():
    names = [f"s{i:05d}" for i in range(5000)]
    deps = {name: ([names[i - 1]] if i else []) for i, name in enumerate(names)}
    assert plan_waves(deps) == [[name] for name in names]
    assert find_cycle(deps) is None
    deps[names[0]] = [names[-1]]
    assert len(find_cycle(deps)) == 5001


@st.composite
def dags(draw):
    """A random acyclic graph: a service only depends on services earlier in a hidden order."""
    names = draw(st.lists(st.from_regex(r"[a-z]{1,3}", fullmatch=True), unique=True, max_size=12))
    deps = {}
    for index, name in enumerate(names):
        deps[name] = draw(st.lists(st.sampled_from(names[:index]), max_size=4)) if index else []
    return deps


@settings(max_examples=200, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_waves_follow_the_rule_and_ignore_input_order(deps, rng):
    waves = plan_waves(deps)
    wave_of = {name: k for k, wave in enumerate(waves) for name in wave}
    assert sorted(wave_of) == sorted(deps)
    assert sum(len(wave) for wave in waves) == len(deps)  # each name once
    for name, needs in deps.items():
        assert wave_of[name] == (1 + max(wave_of[n] for n in needs) if needs else 0)
    assert all(wave == sorted(wave) for wave in waves)
    assert all(waves)
    shuffled = list(deps.items())
    rng.shuffle(shuffled)
    assert plan_waves({name: list(reversed(needs)) for name, needs in shuffled}) == waves
    assert find_cycle(deps) is None


@pytest.mark.parametrize(
    "deps, cycle",
    [
        ({"a": []}, None),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        # reported from the smallest name in the cycle, whatever the search met first
        ({"c": ["a"], "a": ["b"], "b": ["c"]}, ["a", "b", "c", "a"]),
        ({"0first": ["z"], "z": ["y"], "y": ["x"], "x": ["z"]}, ["x", "z", "y", "x"]),
        # unknown names are not part of any cycle
        ({"a": ["ghost"], "b": ["a"]}, None),
    ],
)
def test_find_cycle(deps, cycle):
    assert find_cycle(deps) == cycle


def test_find_cycle_is_deterministic_with_several_cycles():
    deps = {"a": ["b"], "b": ["a"], "m": ["n"], "n": ["m"], "x": ["m", "a"]}
    items = list(deps.items())
    results = set()
    for seed in range(20):
        random.Random(seed).shuffle(items)
        results.add(tuple(find_cycle(dict(items))))
    assert results == {("a", "b", "a")}


def test_find_cycle_ignores_the_order_of_dependency_lists():
    deps = {"a": ["z", "m"], "m": ["n"], "n": ["m"], "z": ["y"], "y": ["z"]}
    assert find_cycle(deps) == ["m", "n", "m"]
    deps["a"].reverse()
    assert find_cycle(deps) == ["m", "n", "m"]


@pytest.mark.timeout(30)
def test_find_cycle_visits_each_service_once():
    """A ladder of 60 layers has 2**60 paths: walking each of them would never end."""
    deps = {"l0a": [], "l0b": []}
    for layer in range(1, 60):
        below = [f"l{layer - 1}a", f"l{layer - 1}b"]
        deps[f"l{layer}a"] = below
        deps[f"l{layer}b"] = below
    assert find_cycle(deps) is None
    assert len(plan_waves(deps)) == 60


@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_find_cycle_returns_a_real_cycle(deps, data):
    if not deps:
        return
    # close a loop: walk down from some service to one without dependencies, which now
    # depends on where the walk started
    start = low = data.draw(st.sampled_from(sorted(deps)))
    while deps[low]:
        low = deps[low][0]
    deps[low] = [start]
    cycle = find_cycle(deps)
    assert cycle is not None
    assert cycle[0] == cycle[-1] == min(cycle)
    assert len(set(cycle[:-1])) == len(cycle) - 1
    for name, need in zip(cycle, cycle[1:]):
        assert need in deps[name]
    with pytest.raises(ValueError, match="dependency cycle"):
        plan_waves(deps)

"""Bit allocation: one word length per weight layer under a memory budget.

The predicted cost of a pattern is the sum, over layers, of that layer's
validation-loss increase when it alone is quantized to its word length (the
sensitivity table, :mod:`qdesign.nn.sensitivity`): an additive model, as in the
layer-wise analysis of Anwar, Hwang & Sung (ICASSP 2015). The budget is on
weight memory, sum of n_weights x bits; per-layer steps and float biases cost
the same for every pattern, so they do not enter.

* :func:`knapsack`: the exact minimum (a multiple-choice knapsack solved by
  merging Pareto sets of partial patterns layer by layer; exact because a
  dominated partial pattern, more memory and no less cost, can never complete
  to a better one).
* :func:`greedy`: start with every layer at the widest candidate and lower,
  one step at a time, the layer with the smallest cost increase per bit saved
  until the pattern fits. Fast, not always optimal.
* :func:`brute_force`: every pattern, for tests.

Torch-free.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..core.errors import ConfigError

ALLOCATIONS = ("knapsack", "greedy")


@dataclass(frozen=True)
class Allocation:
    pattern: tuple[int, ...]
    cost: float  # predicted: sum of the layers' sensitivity at their bits
    memory_bits: int  # sum of n_weights x bits

    @property
    def tag(self) -> str:
        return "-".join(str(b) for b in self.pattern)


def _check(costs: Sequence[Mapping[int, float]], n_weights: Sequence[int], budget_bits: float) -> None:
    if len(costs) != len(n_weights) or not costs:
        raise ValueError(f"{len(costs)} cost tables for {len(n_weights)} layers")
    smallest = sum(n * min(c) for n, c in zip(n_weights, costs))
    if budget_bits < smallest:
        raise ConfigError(
            f"a budget of {budget_bits:.0f} weight bits is below the smallest possible network "
            f"({smallest} bits: every layer at its narrowest candidate)"
        )


def _memory(pattern, n_weights) -> int:
    return int(sum(int(n) * int(b) for n, b in zip(n_weights, pattern)))


def _cost(pattern, costs) -> float:
    return float(sum(c[b] for c, b in zip(costs, pattern)))


def knapsack(costs: Sequence[Mapping[int, float]], n_weights: Sequence[int], budget_bits: float) -> Allocation:
    """The pattern of least predicted cost whose weight memory fits ``budget_bits``
    (ties: less memory, then the lexicographically smaller pattern)."""
    _check(costs, n_weights, budget_bits)
    # remaining minimum memory of the layers after layer i: prunes partials that cannot fit
    rest = [sum(int(n) * min(c) for n, c in zip(n_weights[i + 1 :], costs[i + 1 :])) for i in range(len(costs))]
    states: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]
    for i, (n, table) in enumerate(zip(n_weights, costs)):
        grown = [
            (m + int(n) * int(b), c + float(table[b]), p + (int(b),))
            for m, c, p in states
            for b in sorted(table)
            if m + int(n) * int(b) + rest[i] <= budget_bits
        ]
        grown.sort(key=lambda s: (s[0], s[1], s[2]))
        states = []
        for s in grown:  # keep the Pareto set: each kept state is cheaper than every smaller one
            if not states or s[1] < states[-1][1]:
                states.append(s)
    m, c, p = min(states, key=lambda s: (s[1], s[0], s[2]))
    return Allocation(p, _cost(p, costs), m)


def greedy(costs: Sequence[Mapping[int, float]], n_weights: Sequence[int], budget_bits: float) -> Allocation:
    """Lower one layer at a time by the smallest cost increase per bit saved
    (ties: more bits saved, then the earlier layer) until the pattern fits."""
    _check(costs, n_weights, budget_bits)
    options = [sorted(c) for c in costs]
    pattern = [o[-1] for o in options]
    while _memory(pattern, n_weights) > budget_bits:
        moves = []
        for i, o in enumerate(options):
            k = o.index(pattern[i])
            if k == 0:
                continue
            lower = o[k - 1]
            saved = int(n_weights[i]) * (pattern[i] - lower)
            moves.append(((costs[i][lower] - costs[i][pattern[i]]) / saved, -saved, i, lower))
        _, _, i, lower = min(moves)
        pattern[i] = lower
    p = tuple(pattern)
    return Allocation(p, _cost(p, costs), _memory(p, n_weights))


def brute_force(costs: Sequence[Mapping[int, float]], n_weights: Sequence[int], budget_bits: float) -> Allocation:
    """Every pattern tried (for tests and tiny networks); same ties as :func:`knapsack`."""
    _check(costs, n_weights, budget_bits)
    best = None
    for p in itertools.product(*(sorted(c) for c in costs)):
        m = _memory(p, n_weights)
        if m > budget_bits:
            continue
        key = (_cost(p, costs), m, p)
        if best is None or key < best:
            best = key
    c, m, p = best
    return Allocation(tuple(int(b) for b in p), c, m)


def allocate(
    costs: Sequence[Mapping[int, float]], n_weights: Sequence[int], mean_bits: float, method: str = "knapsack"
) -> Allocation:
    """The pattern ``method`` picks for a budget of ``mean_bits`` bits per weight."""
    if method not in ALLOCATIONS:
        raise ConfigError(f"unknown allocation {method!r} (known: {', '.join(ALLOCATIONS)})")
    budget = float(mean_bits) * sum(int(n) for n in n_weights)
    return (knapsack if method == "knapsack" else greedy)(costs, n_weights, budget)

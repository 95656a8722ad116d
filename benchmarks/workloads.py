"""CPU-bound pure-Python workloads for the tracer benchmarks: recursion and method calls.

`run()` makes exactly `expected_calls()` Python calls (every function and method below,
`run` included), so a tracer that records every call can be checked by counting.
"""

from __future__ import annotations

FIB_N = 27
TREE_DEPTH = 17
ROUNDS = 8


def fib(n: int) -> int:
    """Return the n-th Fibonacci number the slow way (2 * fib(n + 1) - 1 calls)."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Node:
    """A binary tree node; building and summing a tree are method and recursive calls."""

    __slots__ = ("left", "right", "value")

    def __init__(self, value: int, left: Node | None = None, right: Node | None = None) -> None:
        self.value = value
        self.left = left
        self.right = right

    def total(self) -> int:
        s = self.value
        if self.left is not None:
            s += self.left.total()
        if self.right is not None:
            s += self.right.total()
        return s


def build(depth: int, value: int = 1) -> Node:
    """Return a full tree of `depth` levels below the root (2**(depth+1) - 1 nodes)."""
    if depth == 0:
        return Node(value)
    return Node(value, build(depth - 1, 2 * value), build(depth - 1, 2 * value + 1))


def one_round(fib_n: int, tree_depth: int) -> int:
    return fib(fib_n) + build(tree_depth).total()


def run(rounds: int = ROUNDS, fib_n: int = FIB_N, tree_depth: int = TREE_DEPTH) -> int:
    """Run the workload; return a checksum."""
    result = 0
    for _ in range(rounds):
        result += one_round(fib_n, tree_depth)
    return result


def _fib_value(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def expected_calls(rounds: int = ROUNDS, fib_n: int = FIB_N, tree_depth: int = TREE_DEPTH) -> int:
    """Return the number of Python calls `run(rounds, fib_n, tree_depth)` makes."""
    fib_calls = 2 * _fib_value(fib_n + 1) - 1
    nodes = 2 ** (tree_depth + 1) - 1
    per_round = 1 + fib_calls + 3 * nodes  # one_round, fib, build + Node.__init__ + total
    return 1 + rounds * per_round

"""``check_tree``: a value loaded from a checkpoint's pickle, bounded before anything walks it.

A pickle can share one value many times (``l[i] = [l[i-1], l[i-1]]``): 40 small lists that
``json.dumps``, ``repr`` or a validation walk 2^40 times. After unpickling, and before the
library touches the value, :func:`check_tree` counts what such walks would visit (each shared
value every time it is reached) against the ``pickle_nodes`` limit of
:mod:`pspnet_lib.core.limits`, the nesting against ``pickle_depth``, and refuses a value that
contains itself. Its own work is linear in the number of distinct containers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core.limits import check_limit, get_limit
from .pickle_scan import UnsafePickleError

__all__ = ["check_tree"]

_CAP = 1 << 62  # saturating counts


def check_tree(obj: Any, source: str) -> None:
    """Bound a loaded value: at most ``pickle_nodes`` values counting each shared one every time it is
    reached, at most ``pickle_depth`` levels, no value that contains itself.

    Linear in the number of distinct containers (each is counted once, its total remembered).

    Raises:
        ResourceLimitError: too many values or too deep.
        UnsafePickleError: a value that contains itself.
    """
    node_limit = get_limit("pickle_nodes")
    depth_limit = get_limit("pickle_depth")
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    keep: list[Any] = []  # keeps ids stable while walking

    def children(x: Any) -> list[Any]:
        if isinstance(x, Mapping):
            out = [*x.keys(), *x.values()]
        elif isinstance(x, (list, tuple, set, frozenset)):
            out = list(x)
        else:
            out = []
        state = getattr(x, "__dict__", None)
        if isinstance(state, dict) and not isinstance(x, torch.Tensor):
            out += list(state.values())
        for attr in ("args", "state"):  # the stand-ins' records
            if type(x).__module__.endswith("pickle_standins") and hasattr(x, attr):
                out.append(getattr(x, attr))
        return [c for c in out if _is_container(c)]

    stack: list[tuple[Any, list[Any], int]] = [(obj, children(obj), 0)] if _is_container(obj) else []
    if stack:
        on_path.add(id(obj))
        keep.append(obj)
    total_leaves = 1
    while stack:
        node, pending, partial = stack[-1]
        if len(stack) > depth_limit:
            check_limit("pickle_depth", len(stack), source)
        if pending:
            child = pending.pop()
            key = id(child)
            if key in on_path:
                raise UnsafePickleError("a value that contains itself")
            if key in sizes:
                stack[-1] = (node, pending, partial + sizes[key])
            else:
                on_path.add(key)
                keep.append(child)
                stack.append((child, children(child), 0))
            continue
        stack.pop()
        on_path.discard(id(node))
        size = min(_CAP, 1 + partial + _leaf_count(node))
        sizes[id(node)] = size
        if size > node_limit:
            check_limit("pickle_nodes", size, source)
        if stack:
            parent, parent_pending, parent_partial = stack[-1]
            stack[-1] = (parent, parent_pending, min(_CAP, parent_partial + size))
        else:
            total_leaves = size
    if total_leaves > node_limit:
        check_limit("pickle_nodes", total_leaves, source)


def _is_container(x: Any) -> bool:
    return isinstance(x, (Mapping, list, tuple, set, frozenset)) or (
        type(x).__module__.endswith("pickle_standins") and hasattr(x, "__slots__")
    )


def _leaf_count(x: Any) -> int:
    """Items of ``x`` that are not containers themselves (each a value of the tree)."""
    if isinstance(x, Mapping):
        return sum(1 for k in x.keys() if not _is_container(k)) + sum(1 for v in x.values() if not _is_container(v))
    if isinstance(x, (list, tuple, set, frozenset)):
        return sum(1 for v in x if not _is_container(v))
    return 0

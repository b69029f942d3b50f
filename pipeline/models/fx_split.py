"""Cut any FX-traceable ``nn.Module`` after a named submodule into ``(head, tail)``.

The model is traced with the split module kept as a leaf. The head is everything the
split module's output depends on; the tail is the rest, reading that one tensor. A cut
is *clean* only if nothing else computed before it (the input, a skip connection) is
still needed after it; otherwise ``ValueError`` names the value that would cross.
"""

from __future__ import annotations

import torch
from torch import fx, nn


class _CutTracer(fx.Tracer):
    """Default FX tracer that also keeps the module named ``leaf`` opaque."""

    def __init__(self, leaf: str) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name == self.leaf or super().is_leaf_module(
            m, module_qualified_name
        )


def module_names(model: nn.Module) -> list[str]:
    """All named submodules of ``model`` (candidate split points for ``split_module``)."""
    return [n for n, _ in model.named_modules() if n]


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        for inp in stack.pop().all_input_nodes:
            if inp not in seen:
                seen.add(inp)
                stack.append(inp)
    return seen


def _is_constant(node: fx.Node) -> bool:
    """True for nodes that do not depend on any input (parameters, buffers, constants)."""
    return node.op == "get_attr" or (
        node.op in ("call_function", "call_method")
        and all(_is_constant(a) for a in node.all_input_nodes)
    )


def split_module(model: nn.Module, split: str) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Split ``model`` right after submodule ``split`` (a name from ``named_modules()``).

    Returns ``(head, tail)`` GraphModules sharing the original parameters, with
    ``tail(head(x)) == model(x)`` for single-input models. Raises ``ValueError`` for an
    unknown name, a module that is never called or called twice, or an unclean cut.
    """
    names = dict(model.named_modules())
    if split not in names or not split:
        known = ", ".join([n for n in module_names(model) if n.count(".") <= 1][:24])
        raise ValueError(
            f"split={split!r} is not a submodule of {type(model).__name__}; e.g. {known}"
        )
    tracer = _CutTracer(split)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # FX raises many types for untraceable code
        raise ValueError(f"cannot FX-trace {type(model).__name__} to split it: {exc}") from exc
    cuts = [n for n in graph.nodes if n.op == "call_module" and n.target == split]
    if len(cuts) != 1:
        raise ValueError(
            f"split={split!r} is called {len(cuts)} times in forward(); need exactly once"
        )
    cut = cuts[0]
    head_nodes = _ancestors(cut) | {cut}

    head_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node in head_nodes or (node.op == "placeholder"):
            env[node] = head_graph.node_copy(node, lambda n: env[n])
    head_graph.output(env[cut])

    tail_graph = fx.Graph()
    tenv: dict[fx.Node, fx.Node] = {cut: tail_graph.placeholder("x")}
    for node in graph.nodes:
        if node is cut or node.op == "placeholder":
            continue
        if node in head_nodes and not _is_constant(node):
            continue
        for inp in node.all_input_nodes:
            if inp not in tenv and (inp.op == "placeholder" or not _is_constant(inp)):
                raise ValueError(
                    f"split={split!r} is not a clean cut: after it, {node.name!r} still needs "
                    f"{inp.name!r} from before it (skip connection or extra input)"
                )
        if node.op == "output":
            tail_graph.output(fx.map_arg(node.args[0], lambda n: tenv[n]))
            continue
        tenv[node] = tail_graph.node_copy(node, lambda n: tenv[n])
    head = fx.GraphModule(model, head_graph, class_name=f"{type(model).__name__}Head")
    tail = fx.GraphModule(model, tail_graph, class_name=f"{type(model).__name__}Tail")
    head.eval()
    tail.eval()
    head.split_point = split  # type: ignore[assignment]
    tail.split_point = split  # type: ignore[assignment]
    return head, tail


@torch.no_grad()
def check_split(model: nn.Module, head: nn.Module, tail: nn.Module, x: torch.Tensor) -> float:
    """Max abs difference between ``model(x)`` and ``tail(head(x))`` relative to the output scale."""
    ref = model(x)
    out = tail(head(x))
    scale = max(float(ref.abs().max()), 1e-12)
    return float((ref - out).abs().max()) / scale

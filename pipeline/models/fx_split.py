"""Cut any FX-traceable ``nn.Module`` after a named submodule into ``(head, tail)``.

The model is traced with the split module kept as a leaf. The head is everything the
split module's output depends on; the tail is the rest, reading that one tensor. A cut
is *clean* only if nothing else computed before it (the input, a skip connection) is
still needed after it; otherwise ``ValueError`` names the value that would cross.

One kind of value may cross anyway: the batch size read from the input (``x.size(0)``,
``x.shape[0]``, ``x.size()[0]``), as third-party forwards do to flatten by it at the end. Only an
integer crosses there, and the feature has the same batch dimension, so the tail recomputes it
from the feature (``feature.size(0)``) instead of refusing the cut.
"""

from __future__ import annotations

import operator

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


def _is_input_batch_size(node: fx.Node) -> bool:
    """True for ``x.size(0)``, ``x.shape[0]`` or ``x.size()[0]`` of a graph input ``x``."""
    if node.op == "call_method" and node.target == "size" and node.args:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return node.args[0].op == "placeholder" and dim == 0  # type: ignore[union-attr]
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        whole = node.args[0]
        if not isinstance(whole, fx.Node) or not whole.args:
            return False
        src = whole.args[0]
        shape_of = (
            whole.op == "call_method" and whole.target == "size" and len(whole.args) == 1
        ) or (whole.op == "call_function" and whole.target is getattr and whole.args[1] == "shape")
        return shape_of and isinstance(src, fx.Node) and src.op == "placeholder"
    return False


def _is_input_shape_read(node: fx.Node) -> bool:
    """True for ``x.size(...)``, ``x.shape`` or ``x.shape[i]`` of a graph input: reads of metadata
    that the tail never copies (a use that needs one is refused, unless it is the batch size)."""
    if _is_input_batch_size(node):
        return True
    src = node.args[0] if node.args else None
    if node.op == "call_function" and node.target is operator.getitem:
        return isinstance(src, fx.Node) and _is_input_shape_read(src)
    if not isinstance(src, fx.Node) or src.op != "placeholder":
        return False
    return (node.op == "call_method" and node.target == "size") or (
        node.op == "call_function" and node.target is getattr and node.args[1] == "shape"
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
        if (node in head_nodes and not _is_constant(node)) or _is_input_shape_read(node):
            continue
        for inp in node.all_input_nodes:
            if inp not in tenv and _is_input_batch_size(inp):
                # the batch size crosses: the same integer, read from the feature
                tenv[inp] = tail_graph.call_method("size", (tenv[cut], 0))
                continue
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

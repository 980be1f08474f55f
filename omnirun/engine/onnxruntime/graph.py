"""One edit to the builder's graph: the output head computes each row's last real token only.

onnxruntime-genai's builder can prune the language-model head (`prune_lm_head`) so that a prefill computes
logits for one position per row instead of all of them: the prompt's logits are [batch, length, vocabulary],
850 MB for 32 prompts of 135 tokens with a 49k vocabulary, and writing them halves prefill speed on the CPU.
Its pruning takes position -1 of every row, which is a padding position for the shorter prompts of a
right-padded batch (the layout onnxruntime-genai decodes correctly), so their first token would come from the
wrong position. `fix_pruned_head` replaces that constant with each row's own last real position, counted from
the attention mask over the tokens of this call:

    index[b] = sum(attention_mask[b, -S:]) - 1        (S: this call's input length)

A right-padded prefill gets its last prompt token; a decoding step (S = 1) gets position 0.
"""

from __future__ import annotations

from pathlib import Path

PRUNE_GATHER = "/lm_head/prune/Gather"
PRUNE_UNSQUEEZE = "/lm_head/prune/Unsqueeze"
PREFIX = "/lm_head/prune_rows"


class GraphEditError(RuntimeError):
    """The exported graph does not have the shape this edit expects (a builder version that changed it)."""


def fix_pruned_head(model_file: Path) -> None:
    """Rewrite `model_file` (its weights stay in the external data file beside it) so that the pruned head
    gathers each row's last real token. GraphEditError when the builder's pruning nodes are not found."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        raise GraphEditError("the onnx package is not installed (`pip install 'omnirun[onnxruntime]'`)") from None

    model = onnx.load(str(model_file), load_external_data=False)
    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    gather, unsqueeze = nodes.get(PRUNE_GATHER), nodes.get(PRUNE_UNSQUEEZE)
    if gather is None or unsqueeze is None:
        raise GraphEditError(f"{model_file}: no {PRUNE_GATHER} / {PRUNE_UNSQUEEZE} nodes to edit")
    hidden, pruned = gather.input[0], unsqueeze.output[0]
    width = hidden_size(graph, hidden)
    p = PREFIX

    def const(name: str, values: list[int]) -> onnx.NodeProto:
        tensor = helper.make_tensor(f"{p}/{name}", TensorProto.INT64, [len(values)], values)
        return helper.make_node("Constant", [], [f"{p}/{name}"], name=f"{p}/{name}/Constant", value=tensor)

    new = [
        const("one", [1]),
        const("last", [2**62]),
        const("axis1", [1]),
        const("broadcast", [1, 1, width]),
        helper.make_node("Shape", ["input_ids"], [f"{p}/shape"], name=f"{p}/Shape", start=1, end=2),
        helper.make_node("Neg", [f"{p}/shape"], [f"{p}/start"], name=f"{p}/Neg"),
        helper.make_node(
            "Slice",
            ["attention_mask", f"{p}/start", f"{p}/last", f"{p}/axis1"],
            [f"{p}/window"],
            name=f"{p}/Slice",
        ),
        helper.make_node("Cast", [f"{p}/window"], [f"{p}/window64"], name=f"{p}/Cast", to=TensorProto.INT64),
        helper.make_node(
            "ReduceSum", [f"{p}/window64", f"{p}/axis1"], [f"{p}/count"], name=f"{p}/ReduceSum", keepdims=1
        ),
        helper.make_node("Sub", [f"{p}/count", f"{p}/one"], [f"{p}/index"], name=f"{p}/Sub"),
        helper.make_node("Unsqueeze", [f"{p}/index", f"{p}/axis1"], [f"{p}/index3"], name=f"{p}/Unsqueeze"),
        # [batch, 1, 1] -> [batch, 1, hidden]: GatherElements wants indices of the output's shape
        helper.make_node("Expand", [f"{p}/index3", f"{p}/broadcast"], [f"{p}/indices"], name=f"{p}/Expand"),
        helper.make_node("GatherElements", [hidden, f"{p}/indices"], [pruned], name=f"{p}/GatherElements", axis=1),
    ]
    position = list(graph.node).index(gather)
    kept = [node for node in graph.node if node.name not in (PRUNE_GATHER, PRUNE_UNSQUEEZE)]
    del graph.node[:]
    graph.node.extend(kept[:position] + new + kept[position:])
    index = gather.input[1]  # the constant -1, unused now: onnxruntime would warn about it at every load
    if all(index not in node.input for node in graph.node):
        for node in [n for n in graph.node if list(n.output) == [index]]:
            graph.node.remove(node)
        for init in [i for i in graph.initializer if i.name == index]:
            graph.initializer.remove(init)
    onnx.save(model, str(model_file))


def hidden_size(graph: object, name: str) -> int:
    """The last dimension of the value `name` (the final norm's output), from the graph's shape annotations."""
    for value in list(getattr(graph, "value_info", [])) + list(getattr(graph, "output", [])):
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[-1].dim_value:
                return int(dims[-1].dim_value)
    raise GraphEditError(f"no hidden size annotated for {name!r}")

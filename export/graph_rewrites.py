"""Exact rewrites of an exported ONNX graph that make ONNX Runtime's CPU kernels do less work.

Why one rewrite is worth a module: the exporter lowers every ``GroupNorm`` to
Reshape -> InstanceNormalization -> Reshape -> Mul(gamma) -> Add(beta), where gamma and beta are
(C, 1, 1) tensors broadcast over (N, C, H, W). onnxruntime runs those two as generic
broadcasting element-wise kernels, several times slower than a per-channel kernel; one
``BatchNormalization`` (a single pass with per-channel scale and shift) does the same work for
a fraction of the time, which makes a whole batch measurably faster, most of all for the int8
graph under several workers (``benchmarks/inference.py``; figures in docs/results.md).

``BatchNormalization`` here is only a per-channel affine: mean 0, variance 1, and the scale
pre-multiplied by ``sqrt(1 + eps)`` so ``(x - 0) / sqrt(1 + eps) * scale + beta = gamma x + beta``
up to one float rounding. A non-zero epsilon is kept because cuDNN refuses epsilon below 1e-5.
The export's parity check (<= 1e-4 against PyTorch) covers every rewrite.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np

BN_EPS = 1e-5


def per_channel_affine_to_batchnorm(model) -> int:
    """Replace each ``Add(Mul(x, g), b)`` with constant (C, 1, 1) ``g`` and ``b`` (and no other
    reader of the product) by one BatchNormalization, in place; returns how many."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    # tied parameters reach their readers through Identity nodes of the initializer
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.input[0] in inits}
    readers: dict[str, list] = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            readers[i].append(n)
    outputs = {o.name for o in g.output}

    def channel_vector(name: str) -> Optional[np.ndarray]:
        name = alias.get(name, name)
        if name not in inits:
            return None
        a = numpy_helper.to_array(inits[name])
        return a.reshape(-1) if a.ndim == 3 and a.shape[1:] == (1, 1) and a.dtype == np.float32 else None

    replaced: dict[int, object] = {}
    dropped: set[int] = set()
    for mul in g.node:
        if mul.op_type != "Mul" or mul.output[0] in outputs or len(readers[mul.output[0]]) != 1:
            continue
        add = readers[mul.output[0]][0]
        if add.op_type != "Add":
            continue
        factors = [(i, channel_vector(i)) for i in mul.input]
        data = [i for i, v in factors if v is None]
        gamma = [v for _, v in factors if v is not None]
        beta = [channel_vector(i) for i in add.input if i != mul.output[0]]
        if len(data) != 1 or len(gamma) != 1 or len(beta) != 1 or beta[0] is None or gamma[0].shape != beta[0].shape:
            continue
        c = gamma[0].shape[0]
        base = (mul.name or mul.output[0]) + "__affine"
        params = {
            "scale": gamma[0].astype(np.float64) * np.sqrt(1.0 + BN_EPS),
            "bias": beta[0],
            "mean": np.zeros(c),
            "var": np.ones(c),
        }
        tensors = [numpy_helper.from_array(v.astype(np.float32), f"{base}_{k}") for k, v in params.items()]
        g.initializer.extend(tensors)
        replaced[id(mul)] = helper.make_node("BatchNormalization", [data[0]] + [t.name for t in tensors], [add.output[0]], name=base, epsilon=BN_EPS)
        dropped.add(id(add))
    nodes = [replaced.get(id(n), n) for n in g.node if id(n) not in dropped]
    del g.node[:]
    g.node.extend(nodes)
    _drop_unread_initializers(model)
    return len(replaced)


def _drop_unread_initializers(model) -> None:
    """The replaced gamma/beta tensors (and Identity nodes of them) would otherwise stay in the
    file and make onnxruntime log one warning per tensor at every session start."""
    g = model.graph
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in g.node for a in n.attribute):
        return  # readers inside subgraphs are not scanned here; keep everything
    while True:
        read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type == "Identity" and n.output[0] not in read]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    read = {i for n in g.node for i in n.input} | {o.name for o in g.output} | {i.name for i in g.input}
    keep = [i for i in g.initializer if i.name in read]
    del g.initializer[:]
    g.initializer.extend(keep)


def optimise_file(path) -> int:
    """Apply every rewrite to the ONNX file at ``path`` (rewritten in place)."""
    import onnx

    model = onnx.load(str(path))
    n = per_channel_affine_to_batchnorm(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return n

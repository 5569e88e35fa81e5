"""Export-time graph rewrites: exact, and only where they are exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.graph_rewrites import per_channel_affine_to_batchnorm

C = 4


def affine_graph(extra_reader: bool = False, full_gamma: bool = False) -> onnx.ModelProto:
    """y = x * gamma + beta over (N, C, 3, 3); optionally the product is also an output, or
    gamma is a full (C, 3, 3) tensor rather than per-channel."""
    rng = np.random.default_rng(0)
    gamma = rng.standard_normal((C, 3, 3) if full_gamma else (C, 1, 1)).astype(np.float32)
    beta = rng.standard_normal((C, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Identity", ["gamma"], ["gamma_tied"]),  # as the exporter writes tied weights
        helper.make_node("Mul", ["x", "gamma_tied"], ["xg"]),
        helper.make_node("Add", ["xg", "beta"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, C, 3, 3])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("xg", TensorProto.FLOAT, [None, C, 3, 3]))
    graph = helper.make_graph(
        nodes, "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, C, 3, 3])], outputs,
        [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(beta, "beta")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


def test_per_channel_affine_becomes_one_batchnorm_with_the_same_values():
    model = affine_graph()
    x = np.random.default_rng(1).standard_normal((5, C, 3, 3)).astype(np.float32)
    before = run(model, x)
    assert per_channel_affine_to_batchnorm(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["BatchNormalization"]
    assert {i.name for i in model.graph.initializer}.isdisjoint({"gamma", "beta"})  # no dead weights
    np.testing.assert_allclose(run(model, x), before, rtol=1e-6, atol=1e-6)


def test_product_read_elsewhere_is_left_alone():
    model = affine_graph(extra_reader=True)
    assert per_channel_affine_to_batchnorm(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Identity", "Mul", "Add"]


def test_non_per_channel_gamma_is_left_alone():
    model = affine_graph(full_gamma=True)
    assert per_channel_affine_to_batchnorm(model) == 0


def test_exported_model_carries_every_groupnorm_affine_as_batchnorm(exported):
    """One BatchNormalization per GroupNorm (InstanceNormalization after export) and no
    broadcasting per-channel Mul left behind; parity itself is the export tests' job."""
    model = onnx.load(str(exported[0]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("InstanceNormalization") > 0
    assert ops.count("BatchNormalization") == ops.count("InstanceNormalization")
    assert exported[1].parity.max_abs_diff <= 1e-4

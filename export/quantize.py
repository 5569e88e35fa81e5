"""Smaller ONNX graphs: fp16 weight storage and static int8 (QDQ) quantisation.

fp16: onnxconverter-common is not a dependency, so weights are stored as float16 initializers
each followed by a Cast back to float32. The file halves and the arithmetic stays float32, so it
runs unchanged on any CPU provider; the only error is the fp16 rounding of the weights.

int8: ``quantize_static`` with QDQ nodes, calibrated on real *training* patches of the scene
(never test pixels: calibration is fitting). Activation ranges from random noise would be
meaningless for normalised spectra, hence ``--config`` is required. Only convolutions are
quantised, with unsigned activations and signed weights (U8S8): that is the pair onnxruntime's
x86 integer kernels are built for, and onnxruntime then runs them channels-last. Quantising
every op (the first version) wrapped each GroupNorm, add and activation in its own
quantise/dequantise and layout transposes, and ran at a quarter of the fp32 graph's speed.
Weights use 7 of their 8 bits (``reduce_range``): on x86 CPUs without VNNI (AVX2 only, as many
base stations are) onnxruntime's U8S8 kernels add pairs of 8-bit products in 16 bits, which
saturate; on such a CPU the full range flipped 13 of a test model's 64 argmaxes against
PyTorch, 7-bit weights 2 (tests/export/test_infer.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from feddiff.errors import FedDiffError

log = logging.getLogger("feddiff.export.quantize")


def fp16_weights(src: Path, dst: Path, min_elements: int = 16) -> None:
    """float32 initializers (of at least ``min_elements`` values) -> float16 + Cast node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    casts = []
    for init in g.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements:
            continue
        name = init.name
        half = name + "__fp16"
        init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), half))
        casts.append(helper.make_node("Cast", [half], [name], to=TensorProto.FLOAT, name=name + "__cast"))
    # Casts first so every consumer sees its float32 name defined before use (topological order).
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    log.info("fp16: %d initializers stored as float16", len(casts))


class PatchReader:
    """onnxruntime CalibrationDataReader over training patches, in small batches so
    calibration memory stays bounded."""

    def __init__(self, patches: dict[str, np.ndarray], batch: int = 64) -> None:
        self.patches = patches
        self.batch = batch
        self.n = next(iter(patches.values())).shape[0]
        self._it: Optional[Iterator[dict[str, np.ndarray]]] = None
        self.rewind()

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, self.n, self.batch):
            yield {m: x[i : i + self.batch] for m, x in self.patches.items()}

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._gen()


def calibration_reader(config: Optional[str], ck: dict, n: int = 512, seed: int = 0):
    from onnxruntime.quantization import CalibrationDataReader

    from export.infer import scene_patches

    if not config:
        raise FedDiffError("--quantize int8 needs --config: it is calibrated on the scene's training patches")
    patches = scene_patches(config, ck["stats"], list(ck["modalities"]), int(ck["cfg"].model.patch_size), "train", n, np.random.default_rng(seed))

    class Reader(PatchReader, CalibrationDataReader):
        pass

    return Reader(patches)


def int8_static(src: Path, dst: Path, reader) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = Path(str(dst) + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            reduce_range=True,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    finally:
        pre.unlink(missing_ok=True)
        Path(str(dst) + ".pre.onnx.data").unlink(missing_ok=True)


def quantize_model(src: Path, dst: Path, mode: str, config: Optional[str] = None, ck: Optional[dict] = None) -> Path:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "fp16":
        fp16_weights(src, dst)
    elif mode == "int8":
        int8_static(src, dst, calibration_reader(config, ck or {}))
    else:
        raise FedDiffError(f"unknown quantisation {mode!r} (none, fp16, int8)")
    return dst

"""ONNX export and torch-free inference of the FedDiff classifier.

``onnx_export`` and ``quantize`` need PyTorch (they run on the training machine); ``infer``
needs only onnxruntime + numpy, so a base station can classify without installing PyTorch.
Nothing is imported here eagerly for that reason.
"""

"""Typed messages: every kind survives the wire, and a payload with a missing array, a wrong
dtype or a wrong shape is rejected with one line naming the array."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddiff.model.comm import Packed, dequantise, quantise, straight_through
from feddiff.protocol.arrays import decode_arrays, encode_arrays
from feddiff.protocol.label_messages import (
    CeGrad, Encrypted, Fused, HeadGrad, Logits, Metrics, Predicted, Predictions, Score, SealedBackward, SealedHeadGrad,
)
from feddiff.protocol.message import EnvelopeError
from feddiff.protocol.messages import Backward, Commit, Committed, Features, Forward, GetWeights, Hello, Job, Ready, Samples, Weights


def wire(payload):
    """Through the real array codec, as a Channel would carry it."""
    arrays, meta = payload.to_arrays()
    return decode_arrays(encode_arrays(arrays, meta))


def roundtrip(payload):
    return type(payload).from_arrays(*wire(payload))


def test_every_kind_survives_the_wire():
    rows, cols = np.arange(5), np.arange(5) * 2
    packed = quantise(torch.randn(5, 4), 8)
    f = roundtrip(Forward(rows, cols, True, np.arange(5).astype(np.uint8), {"hsi": np.array([1, 0, 1, 1, 0], bool)}))
    assert f.train and f.own["hsi"].tolist() == [True, False, True, True, False] and f.cols.tolist() == cols.tolist()
    got = roundtrip(Features({"hsi": packed})).packed["hsi"]
    assert torch.equal(dequantise(got), dequantise(packed))
    assert roundtrip(Backward({"hsi": np.ones((5, 4), np.float32)})).grads["hsi"].shape == (5, 4)
    h = roundtrip(Hello({"fresh": True}, Samples(rows, cols), Samples(rows[:2], cols[:2]), b"ctx"))
    assert h.fresh and h.public_ctx == b"ctx" and h.test.rows.tolist() == [0, 1]
    j = roundtrip(Job(3, Samples(rows, cols)))
    assert j.round == 3 and j.train.cols.tolist() == cols.tolist() and j.public_ctx is None
    assert roundtrip(GetWeights({"a": 3}, {"hsi": 7})).totals == {"hsi": 7}
    w = roundtrip(Weights({"hsi": {"proj.weight": np.ones((2, 2), np.float32)}}, 4, {"lidar": [b"ab", b"c"]}, {"lidar": [["w", [1], "float32"]]}))
    assert w.samples == 4 and w.encrypted["lidar"] == [b"ab", b"c"] and w.params["hsi"]["proj.weight"].shape == (2, 2)
    c = roundtrip(Commit(5, {"hsi": {"b": np.zeros(3, np.float32)}}, {"lidar": [b"x"]}))
    assert c.backward_steps == 5 and c.encrypted == {"lidar": [b"x"]}
    assert roundtrip(Committed("2 of 3")).refused == "2 of 3" and roundtrip(Committed()).refused is None
    assert isinstance(roundtrip(Ready()), Ready)
    lg = roundtrip(Logits(np.ones((5, 3), np.float32), rows))
    assert lg.idx.tolist() == rows.tolist()
    assert roundtrip(CeGrad(np.ones((5, 3), np.float32), 0.5, 4)).correct == 4
    assert roundtrip(HeadGrad(np.ones((5, 3), np.float32), 0.5, 4, 0.7)).total == 0.7
    fu = roundtrip(Fused([b"a", b"bc"], (5, 3), True, rows))
    assert fu.cts == [b"a", b"bc"] and fu.shape == (5, 3) and fu.train
    assert roundtrip(Encrypted([b"z"], (1, 2))).shape == (1, 2)
    assert roundtrip(Score(rows)).pred.tolist() == rows.tolist() and isinstance(roundtrip(Predictions(rows)), Predictions)
    m = {"oa": 0.5, "aa": 0.5, "kappa": 0.1, "per_class": [0.5], "confusion": [[1]]}
    assert roundtrip(Metrics(m)).metrics == m


def test_the_sealed_he_kinds_survive_the_wire():
    rows, cols = np.arange(5), np.arange(5) * 2
    g = roundtrip(SealedHeadGrad({"lidar": b"\x01box", "hsi": b"\x02"}, 0.5, 3, 0.7))
    assert g.boxes == {"hsi": b"\x02", "lidar": b"\x01box"} and (g.ce, g.correct, g.total) == (0.5, 3, 0.7)
    withheld = roundtrip(SealedHeadGrad({"hsi": b"x"}))  # label DP: the holder withholds loss and accuracy
    assert (withheld.ce, withheld.correct, withheld.total) == (None, None, None)
    assert roundtrip(SealedBackward(b"opaque")).box == b"opaque"
    fu = roundtrip(Fused([b"a"], (5, 3), True, rows, to=["hsi", "lidar"]))
    assert fu.to == ["hsi", "lidar"] and fu.idx.tolist() == rows.tolist()
    ev = roundtrip(Fused([b"a"], (5, 3), False, rows=rows, cols=cols))
    assert not ev.train and ev.rows.tolist() == rows.tolist() and ev.cols.tolist() == cols.tolist()
    assert roundtrip(Predicted(5)).n == 5
    m = {"oa": 0.5, "aa": 0.5, "kappa": 0.1, "per_class": [0.5], "confusion": [[1]], "label_dp": {"epsilon": 4.7, "delta": 1e-5}}
    assert roundtrip(Metrics(m)).metrics == m


@pytest.mark.parametrize("payload, edit, names", [
    (Forward(np.arange(3), np.arange(3)), lambda a: a.pop("cols"), "'cols' missing"),
    (Forward(np.arange(3), np.arange(3)), lambda a: a.update(cols=np.arange(4, dtype=np.int32)), "'cols': 4 rows, expected 3"),
    (Forward(np.arange(3), np.arange(3)), lambda a: a.update(rows=np.zeros(3, np.float32)), "'rows': float32"),
    (Features({"hsi": Packed(torch.zeros(3, 2, dtype=torch.int8), torch.ones(3))}), lambda a: a.update(scale_hsi=np.ones(2, np.float32)), "'scale_hsi'"),
    (Features({"hsi": Packed(torch.zeros(3, 2, dtype=torch.int8), torch.ones(3))}), lambda a: a.pop("scale_hsi"), "'scale_hsi' missing"),
    (Backward({"z": np.ones((2, 2), np.float32)}), lambda a: a.update(grad_z=np.ones(2, np.float32)), "'grad_z'"),
    (Weights({"hsi": {"w": np.ones(2, np.float32)}}), lambda a: a.update({"w_hsi": np.ones(2, np.float32)}), "w_<modality>/<param>"),
    (Logits(np.ones((2, 3), np.float32), np.arange(2)), lambda a: a.update(idx=np.arange(3)), "'idx': 3 rows"),
    (Fused([b"a"], (2, 3)), lambda a: a.update(shape=np.array([2], np.int64)), "'shape'"),
    (Encrypted([b"a"], (2, 3)), lambda a: a.update(ct_lens=np.array([5], np.int64)), "blob lengths"),
])
def test_a_bad_payload_is_rejected_naming_the_array(payload, edit, names):
    arrays, meta = wire(payload)
    edit(arrays)
    with pytest.raises(EnvelopeError, match="bad_payload") as err:
        type(payload).from_arrays(arrays, meta)
    assert names in str(err.value) and "\n" not in str(err.value)


def test_metrics_without_all_fields_and_non_numeric_meta_are_rejected():
    with pytest.raises(EnvelopeError, match="missing kappa"):
        Metrics.from_arrays({}, {"oa": 1, "aa": 1, "per_class": [], "confusion": []})
    with pytest.raises(EnvelopeError, match="'backward_steps'"):
        Commit.from_arrays({}, {"backward_steps": "3"})


def test_codec_straight_through_sends_what_the_receiver_reconstructs():
    codes = torch.randn(6, 4, requires_grad=True)
    received, packed = straight_through(codes, 8)
    assert packed.codes.dtype == torch.int8
    assert torch.equal(received.detach(), dequantise(packed))
    received.sum().backward()
    assert torch.equal(codes.grad, torch.ones(6, 4))  # the rounding is skipped backwards
    raw, p32 = straight_through(codes, 32)
    assert torch.equal(p32.codes, codes.detach()) and torch.equal(p32.scale, torch.ones(6))

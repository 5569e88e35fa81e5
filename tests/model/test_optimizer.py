"""Every role's optimiser: the communication module's bases and the diffusion paths learn at
configured fractions of the rate."""

import dataclasses

import torch

from feddiff.config import ModelSpec, TrainSpec
from feddiff.model.net import FedDiffNet
from feddiff.model.optim import cosine_lr, load_optimizer_state, make_optimizer, set_lr

SPEC = ModelSpec(patch_size=8, head_channels=8, feature_timesteps=[5])
SPEC = dataclasses.replace(SPEC, unet=dataclasses.replace(SPEC.unet, base_channels=8, num_res_blocks=1))


def _rates(opt: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}


def test_comm_bases_get_the_scaled_rate_and_everything_else_the_full_one():
    net = FedDiffNet({"hsi": 6, "lidar": 2}, 4, SPEC)
    t = TrainSpec(lr=1e-3, comm_lr_scale=0.01, diff_lr_scale=1.0)
    opt = make_optimizer([net], t)
    rates = _rates(opt)
    comm = [n for n, _ in net.named_parameters() if ".encoder." in n or ".decoders." in n]
    assert comm, "the model has a communication module"
    for name, p in net.named_parameters():
        if not p.requires_grad:
            assert id(p) not in rates
        elif name in comm:
            assert rates[id(p)] == 1e-5, name
        else:
            assert rates[id(p)] == 1e-3, name
    set_lr(opt, cosine_lr(t.lr, 5, 10))  # the schedule keeps the ratio
    assert {round(g["lr"] / cosine_lr(t.lr, 5, 10), 6) for g in opt.param_groups} == {1.0, 0.01}


def test_diffusion_paths_get_their_own_rate_and_the_ablation_keeps_the_full_one():
    """The conv path over the frozen denoiser's features learns at ``diff_lr_scale`` times the
    rate; without diffusion features the same path reads the raw patch and is not slowed."""
    t = TrainSpec(lr=1e-3, comm_lr_scale=0.1, diff_lr_scale=0.01)
    net = FedDiffNet({"hsi": 6, "lidar": 2}, 4, SPEC)
    rates = _rates(make_optimizer([net], t))
    for name, p in net.named_parameters():
        if p.requires_grad:
            want = 1e-5 if ".diff_path." in name else 1e-4 if ".encoder." in name or ".decoders." in name else 1e-3
            assert abs(rates[id(p)] - want) < 1e-12, name
    ablation = FedDiffNet({"hsi": 6, "lidar": 2}, 4, dataclasses.replace(SPEC, use_diffusion=False))
    rates = _rates(make_optimizer([ablation], t))
    assert {rates[id(p)] for n, p in ablation.named_parameters() if ".diff_path." in n} == {1e-3}


def test_a_station_and_the_aggregator_split_the_same_groups_as_the_whole_model():
    """The federated halves must step exactly like the centralised model."""
    net = FedDiffNet({"hsi": 6, "lidar": 2}, 4, SPEC)
    t = TrainSpec(comm_lr_scale=0.1)
    whole = _rates(make_optimizer([net], t))
    parts = {**_rates(make_optimizer(list(net.branches.values()), t)), **_rates(make_optimizer([net.head], t))}
    assert {k: v for k, v in parts.items() if k in whole} == whole


def test_a_party_with_nothing_to_train_still_gets_an_optimizer():
    """The aggregator in HE mode holds no head weights but keeps the same commit format."""
    opt = make_optimizer([torch.nn.Module()], TrainSpec())
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"][0].numel() == 1


def test_state_from_before_the_comm_group_resumes_with_fresh_moments(caplog):
    """A job stored by a build with one optimiser group keeps its weights across the upgrade."""
    net = FedDiffNet({"hsi": 6, "lidar": 2}, 4, SPEC)
    old = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    net({"hsi": torch.randn(4, 6, 8, 8), "lidar": torch.randn(4, 2, 8, 8)})[0].sum().backward()
    old.step()
    opt = make_optimizer([net], TrainSpec(lr=1e-3, comm_lr_scale=0.01))
    assert not load_optimizer_state(opt, old.state_dict(), "station s1")
    assert "station s1" in caplog.text and "moments restart" in caplog.text
    assert not opt.state and {g["lr"] for g in opt.param_groups} == {1e-3, 1e-5}
    same = make_optimizer([net], TrainSpec(lr=1e-3, comm_lr_scale=0.01))
    assert load_optimizer_state(same, opt.state_dict(), "station s1")


# -- the stage-2 plan --------------------------------------------------------------------------

def test_few_labels_get_whole_extra_passes_up_to_the_step_floor():
    import numpy as np

    from feddiff.model.optim import stage2_plan

    t = TrainSpec(epochs=30, batch_size=64, min_steps=300, seed=4)
    plan = stage2_plan(t, 120, epoch=3)  # 10 labels x 12 classes: 2 batches a pass
    assert len(plan) == 10  # ceil(300 / 30) batches, i.e. 5 whole passes
    seen = np.concatenate([idx for idx, _ in plan])
    assert np.array_equal(np.bincount(seen, minlength=120), np.full(120, 5)), "every pixel as often as any other"
    assert all(dih is not None and dih.shape == idx.shape for idx, dih in plan)
    again = stage2_plan(t, 120, epoch=3)  # the aggregator and centralised training draw the same
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(plan, again))


def test_a_scene_with_enough_labels_trains_one_pass_per_epoch():
    from feddiff.model.optim import stage2_plan

    t = TrainSpec(epochs=30, batch_size=64, min_steps=300)
    assert len(stage2_plan(t, 819, epoch=0)) == 13  # Trento: 13 x 30 = 390 steps >= the floor
    assert len(stage2_plan(dataclasses.replace(t, min_steps=0), 120, epoch=0)) == 2

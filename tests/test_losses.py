import math

import pytest
import torch
import torch.nn.functional as F

from model.data import swap_slot
from model.losses import (DistillLoss, Objective, PairwiseLoss, TupleLoss, hard_negative_partner, hard_negative_slot,
                          info_nce)


def normed(*shape, seed=0, requires_grad=False):
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return z.requires_grad_(requires_grad)


def test_info_nce_is_low_for_aligned_and_log_b_for_constant():
    z = F.normalize(normed(32, 16), dim=-1)
    assert info_nce(z, z, torch.tensor(100.0)) < 1e-3
    c = F.normalize(torch.ones(32, 16), dim=-1)
    assert info_nce(c, c, torch.tensor(10.0)) == pytest.approx(math.log(32), rel=1e-5)


def test_info_nce_is_symmetric():
    a, b = F.normalize(normed(16, 8, seed=1), dim=-1), F.normalize(normed(16, 8, seed=2), dim=-1)
    assert info_nce(a, b, torch.tensor(14.0)) == pytest.approx(float(info_nce(b, a, torch.tensor(14.0))))


def views(seed=0, requires_grad=True):
    leaves = {k: normed(8, 16, seed=seed + i, requires_grad=requires_grad) for i, k in
              enumerate(("T", "V", "A", "TVA", "TVA_aug", "TVA_hard"))}
    return leaves, {k: F.normalize(v, dim=-1) for k, v in leaves.items()}


def test_distillation_sends_no_gradient_to_the_teacher():
    leaves, z = views()
    DistillLoss()(z, torch.tensor(10.0), 0)["distill_loss"].backward()
    assert leaves["TVA"].grad is None  # stop-gradient: the fused embedding is only a teacher
    for m in ("T", "V", "A"):
        assert leaves[m].grad is not None and leaves[m].grad.abs().sum() > 0


def test_pairwise_rotation_uses_one_pair_per_step():
    assert PairwiseLoss(rotate=True).pairs(0) == (("T", "V"),)
    assert PairwiseLoss(rotate=True).pairs(4) == (("T", "A"),)
    assert len(PairwiseLoss().pairs(4)) == 3
    leaves, z = views()
    PairwiseLoss(rotate=True)(z, torch.tensor(10.0), 2)["pairwise_loss"].backward()
    assert leaves["T"].grad is None and leaves["V"].grad is not None and leaves["A"].grad is not None


def test_hard_negative_slot_cycles_t_a_v_with_period_three():
    assert [hard_negative_slot(s) for s in range(7)] == ["T", "A", "V", "T", "A", "V", "T"]


@pytest.mark.parametrize("step", range(3))
def test_hard_negative_differs_from_its_tuple_in_exactly_one_slot(step):
    B = 5
    tuples = {"T": (torch.arange(B * 4).view(B, 4), torch.ones(B, 4, dtype=torch.bool)),
              "V": (torch.arange(B).view(B, 1, 1).expand(B, 3, 2).clone(), torch.ones(B, 3, dtype=torch.bool)),
              "A": (torch.arange(B, dtype=torch.float).view(B, 1).expand(B, 6).clone(),)}
    slot = hard_negative_slot(step)
    partner = hard_negative_partner(B)
    assert not (partner == torch.arange(B)).any()
    hard = swap_slot(tuples, slot, partner)
    for i in range(B):
        changed = [m for m in tuples if any(not torch.equal(h[i], t[i]) for h, t in zip(hard[m], tuples[m]))]
        assert changed == [slot]
        assert all(torch.equal(h[i], t[partner[i]]) for h, t in zip(hard[slot], tuples[slot]))


def test_tuple_loss_prefers_the_positive_over_the_hard_negative():
    leaves, z = views()
    z["TVA_aug"] = z["TVA"]
    easy = TupleLoss()({**z, "TVA_hard": -z["TVA"]}, torch.tensor(10.0), 0)["tuple_loss"]
    hard = TupleLoss()({**z, "TVA_hard": z["TVA"]}, torch.tensor(10.0), 0)["tuple_loss"]
    assert easy < hard  # a hard negative as close as the positive raises the loss


@pytest.mark.parametrize("objective,terms", [("pairwise", {"pairwise_loss"}), ("distill", {"pairwise_loss", "distill_loss"}),
                                             ("full", {"pairwise_loss", "distill_loss", "tuple_loss"})])
def test_objective_sums_its_terms_once(objective, terms):
    _, z = views(requires_grad=False)
    with torch.no_grad():
        out = Objective(objective)(z, 0)
    assert {k for k in out if k.endswith("_loss")} == terms
    assert float(out["loss"]) == pytest.approx(float(sum(out[t] for t in terms)))


def test_objective_views_compute_only_what_is_needed():
    assert Objective("pairwise").views(0) == ("T", "V", "A")
    assert Objective("pairwise", rotate_pairs=True).views(1) == ("T", "A")
    assert Objective("full").views(0) == ("T", "V", "A", "TVA", "TVA_aug", "TVA_hard")


def test_temperature_learnable_or_fixed():
    learn, fixed = Objective("pairwise"), Objective("pairwise", temperature=0.01, learnable_temperature=False)
    assert learn.logit_scale.tau.requires_grad and not fixed.logit_scale.tau.requires_grad
    assert float(fixed.logit_scale()) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="objective must be one of"):
        Objective("triple")

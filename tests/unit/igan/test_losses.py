"""Losses against direct formulas on small tensors: Salimans et al. 2016 (feature matching sec. 3.1,
one-sided label smoothing sec. 3.4, the K+1 semi-supervised loss sec. 5) and R1 (Mescheder et al. 2018)."""
import math

import pytest
import torch
import torch.nn.functional as F

from igan.losses import (feature_matching_loss, generator_adversarial_loss, one_sided_smoothed_bce, r1_penalty,
                         real_logit, ssl_discriminator_loss)


def _lse(x):
    return torch.log(torch.exp(x).sum(1))


def test_ssl_loss_matches_paper_formula():
    torch.manual_seed(0)
    l_lab, l_unl, l_gen = torch.randn(4, 3), torch.randn(5, 3), torch.randn(6, 3)
    y = torch.tensor([0, 2, 1, 2])
    loss_lab, loss_unl = ssl_discriminator_loss(l_lab, y, l_unl, l_gen)
    expect_lab = -torch.log(torch.softmax(l_lab, 1)[torch.arange(4), y]).mean()
    lu, lg = _lse(l_unl), _lse(l_gen)
    expect_unl = -0.5 * lu.mean() + 0.5 * torch.log1p(torch.exp(lu)).mean() + 0.5 * torch.log1p(torch.exp(lg)).mean()
    torch.testing.assert_close(loss_lab, expect_lab)
    torch.testing.assert_close(loss_unl, expect_unl)


def test_ssl_loss_is_k_plus_one_classifier_with_fake_logit_zero():
    # The unlabeled term equals -1/2 log D(x) - 1/2 log(1 - D(G(z))) with the K+1-way softmax.
    torch.manual_seed(1)
    l_unl, l_gen = torch.randn(3, 4), torch.randn(3, 4)
    full_u = torch.softmax(torch.cat([l_unl, torch.zeros(3, 1)], 1), 1)
    full_g = torch.softmax(torch.cat([l_gen, torch.zeros(3, 1)], 1), 1)
    expect = -0.5 * torch.log(1 - full_u[:, -1]).mean() - 0.5 * torch.log(full_g[:, -1]).mean()
    _, loss_unl = ssl_discriminator_loss(l_unl[:1], torch.tensor([0]), l_unl, l_gen)
    torch.testing.assert_close(loss_unl, expect)


def test_ssl_loss_with_smoothing():
    l_unl, l_gen = torch.randn(3, 4), torch.randn(2, 4)
    _, smoothed = ssl_discriminator_loss(l_unl, torch.zeros(3, dtype=torch.long), l_unl, l_gen, real_target=0.9)
    d = torch.sigmoid(_lse(l_unl))
    expect = 0.5 * -(0.9 * torch.log(d) + 0.1 * torch.log(1 - d)).mean() + 0.5 * F.softplus(_lse(l_gen)).mean()
    torch.testing.assert_close(smoothed, expect)


def test_one_sided_smoothing_formula_and_fake_target_stays_zero():
    lr, lf = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0.5, -0.1])
    a = 0.9
    d_r, d_f = torch.sigmoid(lr), torch.sigmoid(lf)
    expect = -(a * torch.log(d_r) + (1 - a) * torch.log(1 - d_r)).mean() - torch.log(1 - d_f).mean()
    torch.testing.assert_close(one_sided_smoothed_bce(lr, lf, a), expect)
    # Smoothing moves the optimum of D(x) on real data to a, not 1.
    x = torch.tensor([math.log(a / (1 - a))], requires_grad=True)
    one_sided_smoothed_bce(x, torch.tensor([-50.0]), a).backward()
    assert abs(x.grad.item()) < 1e-6


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_feature_matching_formula(norm):
    torch.manual_seed(0)
    fr, ff = torch.randn(7, 5), torch.randn(6, 5)
    diff = ff.mean(0) - fr.mean(0)
    expect = (diff ** 2).mean() if norm == "l2" else diff.abs().mean()
    torch.testing.assert_close(feature_matching_loss(fr, ff, norm), expect)


def test_feature_matching_detaches_real_features():
    fr = torch.randn(4, 3, requires_grad=True)
    ff = torch.randn(4, 3, requires_grad=True)
    feature_matching_loss(fr, ff, "l2").backward()
    assert fr.grad is None and ff.grad is not None and ff.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        feature_matching_loss(fr, ff, "l3")


def test_generator_losses():
    lg = torch.randn(5, 3)
    z = _lse(lg)
    torch.testing.assert_close(generator_adversarial_loss(lg, "minimax"), -F.softplus(z).mean())
    torch.testing.assert_close(generator_adversarial_loss(lg, "nonsaturating"), -torch.log(torch.sigmoid(z)).mean())
    t = 0.375
    expect = -(t * torch.log(torch.sigmoid(z)) + (1 - t) * torch.log(1 - torch.sigmoid(z))).mean()
    torch.testing.assert_close(generator_adversarial_loss(lg, "nonsaturating", t), expect)
    torch.testing.assert_close(real_logit(torch.tensor([[0.2], [0.1]])), torch.tensor([0.2, 0.1]))


def test_r1_penalty_of_a_quadratic_discriminator():
    # logit(x) = 1/2 x^T A x + w.x with A symmetric: grad = A x + w, penalty = mean ||A x_i + w||^2
    torch.manual_seed(0)
    a = torch.randn(3, 3)
    a = a + a.T
    w = torch.randn(3)
    x = torch.randn(5, 3, requires_grad=True)
    logits = (0.5 * (x @ a * x).sum(1) + x @ w).unsqueeze(1)       # [5, 1]
    expected = ((x.detach() @ a + w) ** 2).sum(1).mean()
    torch.testing.assert_close(r1_penalty(logits, x), expected)


def test_r1_penalty_of_k_class_logits_uses_the_real_decision_and_trains_d():
    # K logits l_k = W_k.x: real_logit = lse(l), grad = sum_k softmax(l)_k W_k
    torch.manual_seed(1)
    weight = torch.randn(4, 3, requires_grad=True)                 # [K, D]
    x = torch.randn(6, 3, requires_grad=True)
    penalty = r1_penalty(x @ weight.T, x)
    grads = torch.softmax(x.detach() @ weight.detach().T, 1) @ weight.detach()   # [N, D]
    torch.testing.assert_close(penalty, (grads ** 2).sum(1).mean())
    penalty.backward()                                              # the graph reaches D's weights
    assert weight.grad is not None and weight.grad.abs().sum() > 0

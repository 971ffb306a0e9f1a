"""Losses of the paper. Logit tensors are ``[N, K]`` (K real classes; the K+1-th "generated" logit is
fixed at 0) or ``[N]``/``[N, 1]`` for a binary discriminator. Every loss returns a scalar mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def real_logit(logits: torch.Tensor) -> torch.Tensor:
    """The logit of "real" as a binary decision, shape ``[N]``.

    For K class logits with the generated logit fixed at 0, ``D(x) = Z/(Z+1) = sigmoid(lse(l))``;
    for one logit it is that logit.
    """
    if logits.dim() == 2 and logits.shape[1] > 1:
        return torch.logsumexp(logits, dim=1)
    return logits.reshape(-1)


def one_sided_smoothed_bce(logits_real: torch.Tensor, logits_fake: torch.Tensor,
                           real_target: float = 0.9) -> torch.Tensor:
    """Discriminator BCE with real targets ``real_target`` and fake targets 0 (never smoothed).

    ``-mean(a*log D(x) + (1-a)*log(1-D(x))) - mean(log(1-D(G(z))))`` with ``D = sigmoid(real_logit)``.
    """
    lr, lf = real_logit(logits_real), real_logit(logits_fake)
    real = F.binary_cross_entropy_with_logits(lr, torch.full_like(lr, real_target))
    fake = F.softplus(lf).mean()
    return real + fake


def r1_penalty(logits_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """Zero-centred gradient penalty on real data (R1; Mescheder et al., 2018), a scalar:
    ``mean_i ||d real_logit(x_i) / d x_i||^2`` over the batch. ``x_real`` must require grad and be
    the input ``logits_real`` came from; the graph is kept so the penalty trains D. (With
    minibatch discrimination a logit also depends on the other real images: the gradient taken is
    that of the batch's summed logits, so those cross terms are included.)"""
    grad, = torch.autograd.grad(real_logit(logits_real.float()).sum(), x_real, create_graph=True)
    return grad.float().flatten(1).pow(2).sum(1).mean()


def ssl_discriminator_loss(logits_labeled: torch.Tensor, labels: torch.Tensor,
                           logits_unlabeled: torch.Tensor, logits_generated: torch.Tensor,
                           real_target: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The semi-supervised K+1 loss with the generated logit fixed at 0.

    Returns ``(loss_labeled, loss_unlabeled)``: ``CE(logits_labeled, labels)`` and
    ``-1/2 mean(lse(l_unl)) + 1/2 mean(softplus(lse(l_unl))) + 1/2 mean(softplus(lse(l_gen)))``.
    ``real_target < 1`` applies one-sided label smoothing to the real/generated decision.
    """
    loss_labeled = F.cross_entropy(logits_labeled.float(), labels)
    lu = torch.logsumexp(logits_unlabeled.float(), 1)
    lg = torch.logsumexp(logits_generated.float(), 1)
    # -a*log sigmoid(lu) - (1-a)*log(1-sigmoid(lu)) = softplus(lu) - a*lu
    loss_unlabeled = 0.5 * (F.softplus(lu) - real_target * lu).mean() + 0.5 * F.softplus(lg).mean()
    return loss_labeled, loss_unlabeled


def feature_matching_loss(features_real: torch.Tensor, features_fake: torch.Tensor,
                          norm: str = "l2") -> torch.Tensor:
    """Distance between batch-mean features: ``mean((m_fake - m_real)**2)`` ("l2", MNIST code) or
    ``mean(|m_fake - m_real|)`` ("l1", CIFAR/SVHN code). Real features are detached here."""
    m_real = features_real.detach().float().flatten(1).mean(0)
    m_fake = features_fake.float().flatten(1).mean(0)
    diff = m_fake - m_real
    if norm == "l2":
        return (diff ** 2).mean()
    if norm == "l1":
        return diff.abs().mean()
    raise ValueError(f"feature-matching norm must be 'l2' or 'l1', got {norm!r}")


def generator_adversarial_loss(logits_generated: torch.Tensor, kind: str = "nonsaturating",
                               target: float = 1.0) -> torch.Tensor:
    """Generator loss from D's logits on generated samples.

    ``nonsaturating``: BCE of ``D(G(z))`` against ``target`` (1.0: ``-mean(log D(G(z)))``; the ImageNet
    code uses 0.375). ``minimax``: ``mean(log(1 - D(G(z)))) = -mean(softplus(lse(l_gen)))`` as in the
    authors' minibatch-discrimination code.
    """
    lg = real_logit(logits_generated.float())
    if kind == "nonsaturating":
        return F.binary_cross_entropy_with_logits(lg, torch.full_like(lg, target))
    if kind == "minimax":
        return -F.softplus(lg).mean()
    raise ValueError(f"generator loss must be 'nonsaturating' or 'minimax', got {kind!r}")

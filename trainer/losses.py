"""PPO's tensor math as pure functions: masked statistics, GAE, the clipped losses, KL
estimators and entropy.

Imports only torch. Shapes: B sequences, T completion tokens, V vocabulary; `mask` is 1
on a completion's tokens (up to and including its EOS) and 0 on the padding after it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `values` where `mask` is 1 (over everything, or along `dim`)."""
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim) / mask.sum(dim)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `values` where `mask` is 1, with Bessel's correction by default."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        variance = variance * n / (n - 1).clamp(min=1)  # one value: no correction, variance 0
    return variance


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Scale to unit variance (and mean 0 unless `shift_mean=False`) over the unmasked values."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def compute_gae(
    rewards: Tensor,  # (B, T)
    values: Tensor,  # (B, T)
    mask: Tensor,  # (B, T), 1 on a prefix of each row
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016), returns (advantages, returns).

    The state after a completion's last token is terminal: values and rewards past the
    end are zeroed, so the step after the last token contributes nothing.
    """
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    lastgaelam = torch.zeros_like(rewards[:, 0])  # (B,)
    advantages_reversed = []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t + 1 < T else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1) * mask  # (B, T)
    returns = (advantages + values) * mask
    return advantages, returns


def policy_loss(
    logprobs: Tensor,  # (B, T) under the policy being trained
    old_logprobs: Tensor,  # (B, T) under the policy that sampled
    advantages: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
    cliprange: float = 0.2,
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate objective, returns (loss, clipfrac, approx_kl)."""
    logratio = logprobs - old_logprobs
    ratio = torch.exp(logratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((pg_loss2 > pg_loss1).float(), mask)
        # calculate approx_kl http://joschu.net/blog/kl-approx.html
        approx_kl = masked_mean((ratio - 1) - logratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(
    values: Tensor,  # (B, T) from the critic being trained
    old_values: Tensor,  # (B, T) from the critic at sampling time
    returns: Tensor,  # (B, T)
    mask: Tensor,  # (B, T)
    cliprange_value: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """Clipped value loss (as in the PPO2 baselines), returns (loss, clipfrac)."""
    values_clipped = old_values + torch.clamp(
        values - old_values, -cliprange_value, cliprange_value
    )
    vf_loss1 = (values - returns) ** 2
    vf_loss2 = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_loss1, vf_loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((vf_loss2 > vf_loss1).float(), mask)
    return loss, clipfrac


class PolicyLoss(nn.Module):
    """`policy_loss` with its clip range fixed (OpenRLHF's shape for a loss)."""

    def __init__(self, cliprange: float = 0.2) -> None:
        super().__init__()
        self.cliprange = cliprange

    def forward(
        self, logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return policy_loss(logprobs, old_logprobs, advantages, mask, self.cliprange)


class ValueLoss(nn.Module):
    """`value_loss` with its clip range fixed."""

    def __init__(self, cliprange_value: float = 0.2) -> None:
        super().__init__()
        self.cliprange_value = cliprange_value

    def forward(
        self, values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        return value_loss(values, old_values, returns, mask, self.cliprange_value)


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token KL estimate log p - log q (unbiased, can be negative). (B, T) -> (B, T)"""
    return logprobs - ref_logprobs


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token KL estimate (r - 1) - log r with r = q/p (unbiased, never negative)."""
    log_r = ref_logprobs - logprobs
    return torch.expm1(log_r) - log_r


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of each label. logits (B, T, V), labels (B, T) -> (B, T)"""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    return torch.gather(logp, 2, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution at each position. (B, T, V) -> (B, T)"""
    logits = logits.float()
    pd = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (pd * logits).sum(-1)

"""trainer/losses.py against hand-computed values and plain torch on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import (
    PolicyLoss,
    ValueLoss,
    compute_gae,
    entropy_from_logits,
    kl_k1,
    kl_k3,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    value_loss,
)

VALUES = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, -5.0, 200.0, 300.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
UNMASKED = torch.tensor([1.0, 2.0, 3.0, 4.0, -5.0])


def test_masked_mean_matches_torch_on_the_unmasked_slice():
    assert masked_mean(VALUES, MASK).item() == pytest.approx(UNMASKED.mean().item())
    per_row = masked_mean(VALUES, MASK, dim=1)
    assert per_row.tolist() == pytest.approx([2.0, -0.5])


def test_masked_mean_accepts_bool_and_integer_masks():
    assert masked_mean(VALUES, MASK.bool()).item() == pytest.approx(UNMASKED.mean().item())
    assert masked_mean(VALUES, MASK.long()).item() == pytest.approx(UNMASKED.mean().item())


def test_masked_var_matches_torch_on_the_unmasked_slice():
    assert masked_var(VALUES, MASK).item() == pytest.approx(UNMASKED.var().item())
    biased = masked_var(VALUES, MASK, unbiased=False).item()
    assert biased == pytest.approx(UNMASKED.var(unbiased=False).item())


def test_masked_var_of_one_value_is_zero_not_nan():
    assert masked_var(torch.tensor([[3.0, 9.0]]), torch.tensor([[1.0, 0.0]])).item() == 0.0


def test_masked_whiten_matches_torch_on_the_unmasked_slice():
    whitened = masked_whiten(VALUES, MASK)[MASK.bool()]
    expected = (UNMASKED - UNMASKED.mean()) / UNMASKED.std()
    assert torch.allclose(whitened, expected, atol=1e-6)
    assert masked_mean(masked_whiten(VALUES, MASK), MASK).item() == pytest.approx(0.0, abs=1e-6)


def test_masked_whiten_by_hand_and_without_shifting_the_mean():
    values, mask = torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # mean 2, unbiased variance 1
    assert masked_whiten(values, mask)[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    unshifted = masked_whiten(values, mask, shift_mean=False)[0, :3]
    assert unshifted.tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-6)


def test_gae_by_hand():
    # gamma 1, lambda 0.5; row 1 is complete, row 2 ends after two tokens
    rewards = torch.tensor([[1.0, 0.0, 2.0], [1.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 1: deltas (t=2) 2 - 1.5 = 0.5, (t=1) 0 + 1.5 - 1 = 0.5, (t=0) 1 + 1 - 0.5 = 1.5
    #        A2 = 0.5, A1 = 0.5 + 0.5*0.5 = 0.75, A0 = 1.5 + 0.5*0.75 = 1.875
    # row 2: the state after token 1 is terminal: A1 = 2 - 1 = 1, A0 = 1.5 + 0.5*1 = 2
    assert advantages.tolist() == [[1.875, 0.75, 0.5], [2.0, 1.0, 0.0]]
    assert returns.tolist() == [[2.375, 1.75, 2.0], [2.5, 2.0, 0.0]]


def _reference_gae(rewards, values, lengths, gamma, lam):
    """A plain loop over each sequence's own length."""
    advantages = torch.zeros_like(rewards)
    for i, n in enumerate(lengths):
        running = 0.0
        for t in reversed(range(n)):
            next_value = values[i, t + 1].item() if t + 1 < n else 0.0
            delta = rewards[i, t].item() + gamma * next_value - values[i, t].item()
            running = delta + gamma * lam * running
            advantages[i, t] = running
    return advantages


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_a_reference_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    lengths = [7, 3, 1, 5]
    mask = (torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]).float()
    advantages, returns = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    expected = _reference_gae(rewards, values, lengths, gamma, lam)
    assert torch.allclose(advantages, expected, atol=1e-5)
    assert torch.allclose(returns, (expected + values) * mask, atol=1e-5)


def test_gae_defaults_are_gamma_1_lambda_095():
    rewards, values = torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2)
    advantages, _ = compute_gae(rewards, values, torch.ones(1, 2))
    assert advantages[0].tolist() == pytest.approx([0.95, 1.0])


def test_policy_loss_by_hand():
    old = torch.zeros(1, 3)
    new = torch.tensor([[math.log(1.5), math.log(0.5), 0.0]])
    advantages = torch.tensor([[1.0, 1.0, -1.0]])
    loss, clipfrac, approx_kl = policy_loss(new, old, advantages, torch.ones(1, 3), cliprange=0.2)
    # token 1: ratio 1.5 clipped to 1.2 -> -1.2; token 2: ratio 0.5 -> -0.5; token 3: 1
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.0) / 3)
    assert clipfrac.item() == pytest.approx(1 / 3)
    kls = [(1.5 - 1) - math.log(1.5), (0.5 - 1) - math.log(0.5), 0.0]
    assert approx_kl.item() == pytest.approx(sum(kls) / 3)


def test_policy_loss_ignores_masked_tokens_and_is_exact_at_ratio_one():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0]])
    advantages = torch.tensor([[2.0, -1.0, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, clipfrac, approx_kl = policy_loss(logprobs, logprobs.clone(), advantages, mask)
    assert loss.item() == pytest.approx(-0.5)  # -mean(2, -1)
    assert clipfrac.item() == 0.0 and approx_kl.item() == 0.0


def test_policy_loss_gradient_flows_only_through_new_logprobs():
    new = torch.zeros(1, 2, requires_grad=True)
    loss, _, _ = PolicyLoss(0.2)(
        new, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    )
    loss.backward()
    assert new.grad.tolist() == [[-0.5, 0.5]]


def test_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.9]])
    old_values = torch.tensor([[0.5, 0.0]])
    returns = torch.tensor([[0.0, 1.0]])
    loss, clipfrac = value_loss(values, old_values, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 1: unclipped 1.0 vs clipped (0.7)^2 = 0.49 -> 1.0
    # token 2: unclipped 0.01 vs clipped (0.2 - 1)^2 = 0.64 -> 0.64 (clipped)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.64) / 2)
    assert clipfrac.item() == pytest.approx(0.5)
    module_loss, _ = ValueLoss(0.2)(values, old_values, returns, torch.ones(1, 2))
    assert module_loss.item() == pytest.approx(loss.item())


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    assert kl_k1(logp, ref).item() == pytest.approx(math.log(2))
    assert kl_k3(logp, ref).item() == pytest.approx(0.5 - 1 + math.log(2))
    same = torch.tensor([[-1.3, -0.2]])
    assert kl_k1(same, same).tolist() == [[0.0, 0.0]]
    assert kl_k3(same, same).tolist() == [[0.0, 0.0]]


def test_kl_estimators_are_unbiased_and_k3_is_never_negative():
    g = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(5, generator=g), torch.randn(5, generator=g)
    p = torch.distributions.Categorical(logits=p_logits)
    q = torch.distributions.Categorical(logits=q_logits)
    samples = torch.multinomial(p.probs, 200_000, replacement=True, generator=g)
    logp, logq = p.log_prob(samples), q.log_prob(samples)
    true_kl = torch.distributions.kl_divergence(p, q).item()
    assert kl_k1(logp, logq).mean().item() == pytest.approx(true_kl, abs=0.01)
    assert kl_k3(logp, logq).mean().item() == pytest.approx(true_kl, abs=0.01)
    assert (kl_k3(logp, logq) >= 0).all()


def test_logprobs_and_entropy_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g)  # (B, T, V)
    labels = torch.randint(0, 11, (2, 3), generator=g)
    dist = torch.distributions.Categorical(logits=logits)
    assert torch.allclose(logprobs_from_logits(logits, labels), dist.log_prob(labels), atol=1e-6)
    assert torch.allclose(entropy_from_logits(logits), dist.entropy(), atol=1e-6)
    assert entropy_from_logits(torch.zeros(1, 1, 8)).item() == pytest.approx(math.log(8))

"""The asymmetric actor-critic: the cross-attention bridge, who trains what, and that SAC learns."""

import math

import pytest
import torch
import torch.nn.functional as F

from msdp.config import ConfigError, from_dict
from msdp_perception.model import pool_tokens as pooled
from msdp_policy.agent import BRIDGES, AgentConfig, CrossAttentionBridge, SACAgent

WIDTH, N_TOKENS, ACTIONS = 16, 10, 4  # 8 vision tokens + F/T + proprioception


def embeddings(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, N_TOKENS, WIDTH, generator=g)
    present = torch.ones(b, N_TOKENS, dtype=torch.bool)
    present[::3, 8] = False  # F/T masked in every third sample
    return tokens * present[..., None], present


def batch(b: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    tokens, present = embeddings(b, seed)
    next_tokens, next_present = embeddings(b, seed + 1)
    g = torch.Generator().manual_seed(seed)
    action = torch.rand(b, ACTIONS, generator=g) * 2 - 1
    return {
        "tokens": tokens, "present": present, "pooled": pooled(tokens, present, 8), "action": action,
        "reward": -action.pow(2).sum(-1), "terminal": torch.zeros(b),
        "next_tokens": next_tokens, "next_present": next_present, "next_pooled": pooled(next_tokens, next_present, 8),
    }  # fmt: skip


def test_the_bridge_is_standard_multi_head_cross_attention_with_a_learnable_query():
    torch.manual_seed(0)
    bridge = CrossAttentionBridge(WIDTH, heads=4)
    tokens, present = embeddings(5)
    fast = bridge(tokens, present)
    # reference: project every token, attend from the query, as a textbook layer does
    x = tokens
    k = bridge.key(x).view(5, N_TOKENS, 4, 4).transpose(1, 2)
    v = bridge.value(x).view(5, N_TOKENS, 4, 4).transpose(1, 2)
    q = bridge.query[None, :, None, :].expand(5, -1, -1, -1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=present[:, None, None, :])
    reference = bridge.out(out.reshape(5, WIDTH))
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
    # a masked token has no say
    changed = tokens.clone()
    changed[::3, 8] = 100.0
    torch.testing.assert_close(bridge(changed, present)[::3], fast[::3])


def test_pooled_representation_averages_vision_tokens_then_present_modalities():
    tokens, present = embeddings(3)
    p = pooled(tokens, present, 8)
    vision = tokens[:, :8].mean(1)
    torch.testing.assert_close(p[0], (vision[0] + tokens[0, 9]) / 2)  # F/T masked in sample 0
    torch.testing.assert_close(p[1], (vision[1] + tokens[1, 8] + tokens[1, 9]) / 3)


def test_only_the_critic_loss_trains_the_bridge_and_the_actor_never_touches_the_critic():
    torch.manual_seed(0)
    agent = SACAgent(AgentConfig(hidden=32), WIDTH, N_TOKENS, ACTIONS)
    b = batch()
    critic_before = {k: v.clone() for k, v in agent.critic.state_dict().items()}
    actor_before = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    observation, next_observation = agent.features(b), agent.features(b, "next_")
    latent = agent.critic.bridge(observation.tokens, observation.token_present).detach()
    agent.update_actor(observation.pooled, latent)
    assert all(torch.equal(v, agent.critic.state_dict()[k]) for k, v in critic_before.items())
    assert all(p.grad is None for p in agent.critic.parameters())
    assert any(not torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor_before.items())
    actor_before = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    agent.update_critic(b, observation, next_observation)
    assert not torch.equal(critic_before["bridge.query"], agent.critic.state_dict()["bridge.query"])
    assert all(torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor_before.items())
    # the target critic trails the critic by Polyak averaging
    tau = agent.config.tau
    expected = (1 - tau) * critic_before["bridge.query"] + tau * agent.critic.state_dict()["bridge.query"]
    torch.testing.assert_close(agent.critic_target.state_dict()["bridge.query"], expected)


@pytest.mark.parametrize("bridge", BRIDGES)
def test_sac_learns_a_one_step_problem_with_every_bridge(bridge):
    """Reward -|a - a*|^2 on terminal steps: the actor must move from its random start to the best action."""
    torch.manual_seed(0)
    config = AgentConfig(bridge=bridge, hidden=64, init_temperature=0.01, critic_lr=1e-3, actor_lr=1e-3)
    agent = SACAgent(config, WIDTH, N_TOKENS, ACTIONS)
    best = torch.tensor([0.6, -0.4, 0.3, -0.7])
    test = batch(256, seed=10_000)
    start = (agent.act(test["pooled"], deterministic=True) - best).pow(2).sum(-1).mean()
    for step in range(500):
        b = batch(64, seed=step)
        b["reward"] = -(b["action"] - best).pow(2).sum(-1)
        b["terminal"] = torch.ones(64)
        agent.update(b)
    error = (agent.act(test["pooled"], deterministic=True) - best).pow(2).sum(-1).mean()
    # every bridge learns; the default one (the paper's fastest) gets there within this budget
    assert error < (0.1 if bridge == "cross_attention" else 0.6) * start, (float(start), float(error))


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="bridge"):
        from_dict(AgentConfig, {"bridge": "film"})
    with pytest.raises(ConfigError, match="critics"):
        from_dict(AgentConfig, {"critics": 1})
    agent = SACAgent(AgentConfig(init_temperature=0.2), WIDTH, N_TOKENS, ACTIONS)
    assert math.isclose(agent.temperature.item(), 0.2, rel_tol=1e-6) and agent.target_entropy == -ACTIONS


def test_cloning_pulls_the_mean_action_only_to_batch_actions_the_critic_rates_higher():
    torch.manual_seed(0)
    agent = SACAgent(AgentConfig(hidden=32, bc_weight=1.0), WIDTH, N_TOKENS, ACTIONS)
    b = batch(16)
    latent = agent.critic.bridge(b["tokens"], b["present"]).detach()
    mean_action = agent.actor.sample(b["pooled"])[2]
    error = (mean_action - b["action"]).pow(2).sum(-1).mean()
    loss, kept = agent.cloning_loss(latent, torch.full((16,), -1e9), mean_action, b["action"])
    torch.testing.assert_close((loss, kept), (error, torch.tensor(1.0)))  # every batch action rated higher
    loss, kept = agent.cloning_loss(latent, torch.full((16,), 1e9), mean_action, b["action"])
    assert loss == 0 and kept == 0  # none: nothing to clone
    metrics = agent.update_actor(b["pooled"], latent, b["action"])
    assert {"bc_loss", "bc_kept"} <= metrics.keys()


def test_without_a_cloning_weight_the_batch_actions_change_nothing():
    updated = []
    for data_action in (None, batch()["action"]):
        torch.manual_seed(0)
        agent = SACAgent(AgentConfig(hidden=32), WIDTH, N_TOKENS, ACTIONS)
        b = batch()
        latent = agent.critic.bridge(b["tokens"], b["present"]).detach()
        assert "bc_loss" not in agent.update_actor(b["pooled"], latent, data_action)
        updated.append(agent.actor.state_dict())
    assert all(torch.equal(updated[0][k], updated[1][k]) for k in updated[0])


def test_td_loss_is_the_loss_an_update_minimises_and_changes_nothing():
    torch.manual_seed(0)
    agent = SACAgent(AgentConfig(), WIDTH, N_TOKENS, ACTIONS)
    data = batch()
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    torch.manual_seed(7)  # the same target-action noise for both
    held_out = agent.td_loss(data)
    assert all(torch.equal(before[k], v) for k, v in agent.state_dict().items())
    torch.manual_seed(7)
    reported = agent.update(data)["critic_loss"]
    torch.testing.assert_close(held_out, reported)
    torch.manual_seed(7)
    assert agent.td_loss(data) < held_out  # the step lowered it

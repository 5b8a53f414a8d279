"""The asymmetric actor-critic on MSDP embeddings (SAC, optionally RLPD), in one file.

Inputs are frozen token embeddings (B, n_tokens, D) with a presence mask (B, n_tokens) and the pooled vector
(B, D) -- exactly what ``/msdp/embedding`` carries. The two halves see the observation differently:

- the **critic** reads the tokens through a *latent bridge*, by default ONE cross-attention layer whose learnable
  query attends over the tokens (keys and values); the bridge is trained by the critic loss only, and feeds an
  ensemble of Q-networks with target copies (Polyak averaging);
- the **actor** reads the parameter-free pooled vector (mean over vision tokens, then over the modalities) and
  outputs a tanh-squashed Gaussian; it never backpropagates into the critic's bridge.

The paper's ablations are settings (``bridge``: cross_attention | pooling | cls | concat), not forks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from msdp.config import param_range
from msdp.devices import PRECISIONS, autocast
from msdp_perception.model import Embedding, MSDPModel, pool_tokens

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
BRIDGES = ("cross_attention", "pooling", "cls", "concat")


@dataclass(frozen=True)
class AgentConfig:
    """SAC / RLPD hyperparameters (CleanRL-style: all in one place); paper values where it states them."""

    bridge: str = field(default="cross_attention", metadata={"choices": BRIDGES})
    hidden: int = field(default=256, metadata=param_range(8, 4096, "Q-network and actor MLP width"))
    critics: int = field(default=2, metadata=param_range(2, 20, "Q-networks in the ensemble"))
    heads: int = field(default=4, metadata=param_range(1, 64, "cross-attention heads"))
    gamma: float = field(default=0.99, metadata=param_range(0.0, 1.0, "discount"))
    tau: float = field(default=0.005, metadata=param_range(0.0, 1.0, "Polyak rate of the target critics"))
    critic_lr: float = field(default=3e-4, metadata=param_range(1e-6, 1e-1))
    actor_lr: float = field(default=3e-4, metadata=param_range(1e-6, 1e-1))
    temperature_lr: float = field(default=3e-4, metadata=param_range(1e-6, 1e-1))
    init_temperature: float = field(default=0.1, metadata=param_range(1e-4, 10.0))
    batch_size: int = field(default=256, metadata=param_range(1, 8192))
    critic_updates_per_step: int = field(default=2, metadata=param_range(1, 64, "update-to-data ratio"))
    critic_updates_per_actor_update: int = field(default=1, metadata=param_range(1, 64, "RLPD push cube: 4"))
    layer_norm: bool = field(default=False, metadata={"doc": "LayerNorm in the Q-networks (RLPD turns it on)"})
    rlpd: bool = field(default=False, metadata={"doc": "half of each batch from offline data, layer-normed critic"})
    bc_weight: float = field(
        default=0.0,
        metadata=param_range(0.0, 100.0, "behaviour cloning of batch actions the critic rates higher; 0 = off"),
    )
    precision: str = field(
        default="fp32", metadata={"choices": PRECISIONS, "doc": "bf16: forward passes and losses under autocast"}
    )


class CrossAttentionBridge(nn.Module):
    """One multi-head cross-attention layer with a learnable query; keys and values are the tokens.

    With a single query, attention is computed without projecting every token: q.(W_k x + b_k) =
    (W_k^T q).x + const, and sum_i a_i (W_v x_i + b_v) = W_v (sum_i a_i x_i) + b_v. This is the same layer as
    a standard one, about 20x cheaper, which matters for a critic updated twice per environment step on a CPU.
    The tokens come out of the encoder's final LayerNorm, so the layer does not normalise them again.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_width = heads, width // heads
        self.query = nn.Parameter(torch.randn(heads, self.head_width) * 0.02)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.out_width = width

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        h, dh = self.heads, self.head_width
        w_key = self.key.weight.view(h, dh, -1)  # per head: (dh, D)
        key_query = torch.einsum("hd,hdk->hk", self.query, w_key) / math.sqrt(dh)  # (H, D)
        scores = (tokens @ key_query.T).transpose(1, 2).masked_fill(~present[:, None, :], float("-inf"))
        attention = scores.softmax(dim=-1)  # (B, H, N)
        mixed = attention @ tokens  # (B, H, D)
        w_value = self.value.weight.view(h, dh, -1)
        values = torch.einsum("bhk,hdk->bhd", mixed, w_value) + self.value.bias.view(h, dh)
        return self.out(values.reshape(len(tokens), h * dh))


class PoolingBridge(nn.Module):
    """Ablation: the critic gets the same parameter-free pooled vector as the actor."""

    def __init__(self, width: int, n_vision: int):
        super().__init__()
        self.n_vision, self.out_width = n_vision, width

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return pool_tokens(tokens, present, self.n_vision)


class ClsBridge(nn.Module):
    """Ablation: a learnable CLS token joins the tokens in one self-attention block; its output is used."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.block = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.out_width = width

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        padding = torch.cat([torch.zeros_like(present[:, :1]), ~present], dim=1)
        return self.block(x, src_key_padding_mask=padding)[:, 0]


class ConcatBridge(nn.Module):
    """Ablation: every token (masked ones as zeros) concatenated and projected."""

    def __init__(self, width: int, n_tokens: int, hidden: int):
        super().__init__()
        self.project = nn.Linear(width * n_tokens, hidden)
        self.out_width = hidden

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.project((tokens * present[..., None]).flatten(1))


def make_bridge(config: AgentConfig, width: int, n_tokens: int) -> nn.Module:
    n_vision = n_tokens - 2
    if config.bridge == "cross_attention":
        return CrossAttentionBridge(width, config.heads)
    if config.bridge == "pooling":
        return PoolingBridge(width, n_vision)
    if config.bridge == "cls":
        return ClsBridge(width, config.heads)
    return ConcatBridge(width, n_tokens, config.hidden)


def mlp(inputs: int, hidden: int, outputs: int, layer_norm: bool) -> nn.Sequential:
    norm = (lambda: nn.LayerNorm(hidden)) if layer_norm else nn.Identity
    layers = [nn.Linear(inputs, hidden), norm(), nn.ReLU(), nn.Linear(hidden, hidden), norm(), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, outputs))


class QEnsemble(nn.Module):
    """``critics`` independent Q-networks (3-layer MLPs) held as stacked weights and run as batched matmuls.

    The same function as a list of ``mlp``s, in a third of the kernel launches: on a CPU the critic update is
    dominated by these small matmuls. Each member has its own initialisation and, with ``layer_norm``, its
    own LayerNorm affine parameters.
    """

    def __init__(self, critics: int, inputs: int, hidden: int, layer_norm: bool):
        super().__init__()
        sizes = [(inputs, hidden), (hidden, hidden), (hidden, 1)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in sizes:  # nn.Linear's default initialisation, per member
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(critics, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(critics, 1, fan_out).uniform_(-bound, bound)))
        self.layer_norm = layer_norm
        if layer_norm:
            self.norm_scales = nn.Parameter(torch.ones(2, critics, 1, hidden))
            self.norm_shifts = nn.Parameter(torch.zeros(2, critics, 1, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inputs) -> (critics, B)."""
        h = x
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(bias, h.expand(len(weight), -1, -1), weight)
            if layer < 2:
                if self.layer_norm:
                    h = F.layer_norm(h, h.shape[-1:]) * self.norm_scales[layer] + self.norm_shifts[layer]
                h = F.relu(h)
        return h.squeeze(-1)


class Critic(nn.Module):
    """Latent bridge over the tokens, then an ensemble of Q-networks on (bridge output, action)."""

    def __init__(self, config: AgentConfig, width: int, n_tokens: int, action_dim: int):
        super().__init__()
        self.bridge = make_bridge(config, width, n_tokens)
        layer_norm = config.layer_norm or config.rlpd
        self.q = QEnsemble(config.critics, self.bridge.out_width + action_dim, config.hidden, layer_norm)

    def forward(self, tokens: torch.Tensor, present: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(critics, B) Q-values."""
        return self.q(torch.cat([self.bridge(tokens, present), action], dim=-1))


class Actor(nn.Module):
    """Pooled embedding -> tanh-squashed Gaussian over the normalised action in [-1, 1]^A."""

    def __init__(self, config: AgentConfig, width: int, action_dim: int):
        super().__init__()
        self.net = mlp(width, config.hidden, 2 * action_dim, layer_norm=False)

    def forward(self, pooled_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(pooled_embedding).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, pooled_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action, log-probability, deterministic action), with the tanh change of variables."""
        mean, log_std = self(pooled_embedding)
        normal = torch.distributions.Normal(mean, log_std.exp())
        raw = normal.rsample()
        action = torch.tanh(raw)
        log_prob = (normal.log_prob(raw) - 2 * (math.log(2) - raw - F.softplus(-2 * raw))).sum(-1)
        return action, log_prob, torch.tanh(mean)

    @torch.no_grad()
    def act(self, pooled_embedding: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for acting (no gradient): sampled, or the mean action for evaluation."""
        action, _, mean_action = self.sample(pooled_embedding)
        return mean_action if deterministic else action


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each Q-network's mean squared TD error, summed over the ensemble: q (critics, B), target (B,)."""
    return F.mse_loss(q, target.expand_as(q), reduction="none").mean(dim=1).sum()


def adam(parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam as one fused kernel over all parameters (the same update; on a CPU the per-tensor steps of the
    default implementation cost a tenth of a learner update)."""
    return torch.optim.Adam(parameters, lr=lr, fused=True)


class SACAgent(nn.Module):
    """Soft actor-critic with automatic temperature over MSDP token embeddings.

    A batch is a dict of tensors as ``Replay.sample`` gives it: the observation fields, ``action`` (B, A) in
    [-1, 1], ``reward`` (B,), ``terminal`` (B,) (1 where the episode ended for good, not at a time limit), and
    the observation fields again for the next observation with a ``next_`` prefix. The observation fields are
    ``tokens`` (B, N, D) and ``present`` (B, N) for a frozen encoder's log, or the raw ``image``, ``wrench``,
    ``proprio`` and ``sensors`` (B, 3) when ``encoder`` is given: an encoder trained end to end by the critic
    loss (the ``scratch`` variant; the actor gets its features detached, as in DrQ-v2).
    """

    def __init__(
        self, config: AgentConfig, width: int, n_tokens: int, action_dim: int, encoder: MSDPModel | None = None
    ):
        super().__init__()
        self.config = config
        self.n_vision = n_tokens - 2
        self.encoder = encoder
        self.critic = Critic(config, width, n_tokens, action_dim)
        self.critic_target = Critic(config, width, n_tokens, action_dim)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.actor = Actor(config, width, action_dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(config.init_temperature)))
        self.target_entropy = -float(action_dim)
        critic_parameters = [*self.critic.parameters(), *(encoder.parameters() if encoder is not None else [])]
        self.critic_optimizer = adam(critic_parameters, config.critic_lr)
        self.actor_optimizer = adam(self.actor.parameters(), config.actor_lr)
        self.temperature_optimizer = adam([self.log_temperature], config.temperature_lr)
        self.critic_updates = 0

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def features(self, batch: dict[str, torch.Tensor], prefix: str = "") -> Embedding:
        """Tokens, token presence and pooled vector of the batch's observations (``prefix`` "next_" for s')."""
        if self.encoder is None:  # tokens are logged in bfloat16: widened for fp32, used as they are under bf16
            tokens, present = batch[f"{prefix}tokens"], batch[f"{prefix}present"]
            tokens = tokens if self.config.precision == "bf16" else tokens.float()
            pooled = batch.get(f"{prefix}pooled")
            return Embedding(tokens, present, pool_tokens(tokens, present, self.n_vision) if pooled is None else pooled)
        return self.encoder.embed(
            batch[f"{prefix}image"], batch[f"{prefix}wrench"], batch[f"{prefix}proprio"], batch[f"{prefix}sensors"]
        )

    def act(self, pooled_embedding: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor.act(pooled_embedding, deterministic)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One critic update, plus an actor and temperature update every ``critic_updates_per_actor_update``.

        The batch must be on the agent's device. The metrics stay tensors on it (reading them would wait for
        the device at every update): ``float()`` them when they are logged."""
        with autocast(self.log_temperature.device, self.config.precision):
            observation = self.features(batch)  # a scratch encoder gets gradients from the critic loss only
            with torch.no_grad():
                next_observation = self.features(batch, "next_")
            metrics, latent = self.update_critic(batch, observation, next_observation)
            self.critic_updates += 1
            if self.critic_updates % self.config.critic_updates_per_actor_update == 0:
                metrics.update(self.update_actor(observation.pooled.detach(), latent, batch["action"]))
        return metrics

    @torch.no_grad()
    def td_target(self, batch: dict[str, torch.Tensor], next_observation: Embedding) -> torch.Tensor:
        """r + gamma (1 - terminal) (min over the target critics of Q(s', a') - alpha log pi(a'|s')), a' ~ pi."""
        next_action, next_log_prob, _ = self.actor.sample(next_observation.pooled)
        next_q = self.critic_target(next_observation.tokens, next_observation.token_present, next_action)
        soft_value = next_q.min(dim=0).values - self.temperature * next_log_prob
        return batch["reward"] + self.config.gamma * (1.0 - batch["terminal"].float()) * soft_value

    @torch.no_grad()
    def td_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The critic loss on a batch without updating anything (held-out batches, precision comparisons)."""
        with autocast(self.log_temperature.device, self.config.precision):
            observation, next_observation = self.features(batch), self.features(batch, "next_")
            q = self.critic(observation.tokens, observation.token_present, batch["action"])
            return critic_loss(q, self.td_target(batch, next_observation)).float()

    def update_critic(
        self, batch: dict[str, torch.Tensor], observation: Embedding, next_observation: Embedding
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Returns the metrics and the bridge's output for the observations (detached, for the actor)."""
        target = self.td_target(batch, next_observation)
        latent = self.critic.bridge(observation.tokens, observation.token_present)
        q = self.critic.q(torch.cat([latent, batch["action"]], dim=-1))
        loss = critic_loss(q, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.config.tau)
        return {"critic_loss": loss.detach(), "q": q.detach().mean()}, latent.detach()

    def update_actor(
        self, pooled: torch.Tensor, latent: torch.Tensor, data_action: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``latent`` is the critic's bridge output for the same observations, detached (DrQ-v2 style): the
        actor's loss reaches neither the bridge nor the Q-networks' weights, and the bridge is not run twice.
        ``data_action`` (the batch's actions) is cloned with ``bc_weight`` where the critic prefers it."""
        action, log_prob, mean_action = self.actor.sample(pooled)
        self.critic.q.requires_grad_(False)
        q = self.critic.q(torch.cat([latent, action], dim=-1)).mean(dim=0)
        self.critic.q.requires_grad_(True)
        actor_loss = (self.temperature.detach() * log_prob - q).mean()
        cloning: dict[str, torch.Tensor] = {}
        if self.config.bc_weight > 0.0 and data_action is not None:
            bc_loss, kept = self.cloning_loss(latent, q.detach(), mean_action, data_action)
            actor_loss = actor_loss + self.config.bc_weight * bc_loss
            cloning = {"bc_loss": bc_loss.detach(), "bc_kept": kept}
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        temperature_loss = -(self.log_temperature * (log_prob.detach() + self.target_entropy)).mean()
        self.temperature_optimizer.zero_grad(set_to_none=True)
        temperature_loss.backward()
        self.temperature_optimizer.step()
        return {"actor_loss": actor_loss.detach(), "temperature": self.temperature.detach(),
                "entropy": -log_prob.detach().mean(), **cloning}  # fmt: skip

    def cloning_loss(
        self, latent: torch.Tensor, q_policy: torch.Tensor, mean_action: torch.Tensor, data_action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared error of the mean action to the batch's action, only where the critic rates the batch's action
        above the policy's (the Q-filter of Nair et al., 2018); returns (loss, fraction kept).

        Evaluation acts with the mean action, which SAC's entropy term leaves free to sit where the sampled
        actions succeed only by their noise (pressing on the hole's edge); demonstrations in RLPD's offline half
        pull it towards what worked, while random play and worse online actions fail the filter and are ignored.
        """
        with torch.no_grad():
            q_data = self.critic.q(torch.cat([latent, data_action], dim=-1)).mean(dim=0)
            better = (q_data > q_policy).float()
        error = (mean_action - data_action).pow(2).sum(dim=-1)
        return (better * error).mean(), better.mean()

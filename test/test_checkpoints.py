"""Every checkpoint boundary is strict: damaged files, NaN weights and unreadable sidecars are refused naming the
file; actor weights from the graph pass a gate before the policy acts with them; old checkpoints still load."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from msdp_perception.checkpoint import CheckpointError, UncheckedCheckpointWarning, load_encoder, save_encoder
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_policy.agent import Actor, AgentConfig, SACAgent
from msdp_policy.learner import ActorWeightsGate, Learner, WeightsRefused, actor_to_bytes
from msdp_policy.policy import PolicyInfo, load_policy, save_policy
from msdp_policy.replay import Replay, transition_schema
from msdp_policy.transition_log import TransitionReader, TransitionWriter

ENCODER = MSDPConfig(stem_channels=8, width=32, decoder_width=32)
AGENT = AgentConfig(hidden=16, batch_size=8)
ACTIONS = 4


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def flip_a_byte_of(path: Path, tensor: torch.Tensor) -> None:
    """Flip the lowest bit of one of ``tensor``'s bytes where the file stores it: a value that still parses."""
    data = bytearray(path.read_bytes())
    at = bytes(data).find(tensor.detach().contiguous().numpy().tobytes())
    assert at >= 0, "the tensor's bytes are stored as they are"
    data[at + 5] ^= 1
    path.write_bytes(bytes(data))


def save_frozen_policy(folder: Path, actor: Actor | None = None) -> tuple[Path, Path, MSDPModel, Actor]:
    """An encoder checkpoint and a msdp_frozen policy on it: (encoder path, policy path, encoder, actor)."""
    torch.manual_seed(0)
    encoder = MSDPModel(ENCODER)
    actor = actor if actor is not None else Actor(AGENT, ENCODER.width, ACTIONS)
    encoder_path = save_encoder(folder / "encoder", encoder)
    info = PolicyInfo(AGENT, "msdp_frozen", str(encoder_path), "vision,ft,proprio", {}, ACTIONS, {})
    return encoder_path, save_policy(folder / "policy", actor, None, info), encoder, actor


def test_a_saved_policy_loads_verified_and_without_warnings(tmp_path):
    _, policy_path, _, actor = save_frozen_policy(tmp_path)
    assert len(json.loads((tmp_path / "policy.json").read_text())["weights_sha256"]) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_policy(policy_path)
    x = torch.randn(3, ENCODER.width)
    torch.testing.assert_close(loaded.actor(x), actor(x))


@pytest.mark.parametrize("damaged", ["encoder", "policy"])
def test_flipped_bytes_in_a_checkpoint_are_refused_naming_the_file(tmp_path, damaged):
    encoder_path, policy_path, encoder, actor = save_frozen_policy(tmp_path)
    if damaged == "encoder":
        flip_a_byte_of(encoder_path, encoder.state_dict()["vision_head.weight"])
    else:
        flip_a_byte_of(policy_path, actor.net[0].weight)
    expected = rf"{damaged}\.safetensors: damaged, its bytes do not match the weights_sha256 in {damaged}\.json"
    with pytest.raises(CheckpointError, match=expected):
        load_policy(policy_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_saved_in_a_checkpoint_are_refused_on_load(tmp_path, bad):
    actor = Actor(AGENT, ENCODER.width, ACTIONS)
    with torch.no_grad():
        actor.net[0].weight[1, 2] = bad
    _, policy_path, _, _ = save_frozen_policy(tmp_path, actor)  # the checksum is good: the file is as saved
    with pytest.raises(CheckpointError, match=r"policy\.safetensors: actor\.net\.0\.weight holds 1 NaN/inf values"):
        load_policy(policy_path)


def test_weights_of_another_dtype_are_refused_not_converted(tmp_path):
    _, policy_path, _, _ = save_frozen_policy(tmp_path, Actor(AGENT, ENCODER.width, ACTIONS).double())
    with pytest.raises(CheckpointError, match=r"policy\.safetensors: .*dtypes do not match, .* is float64\[16, 32\]"):
        load_policy(policy_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"\xff\xfe{not text", "expected a UTF-8 JSON sidecar"), (b"{truncated", "expected a UTF-8 JSON sidecar"),
     (b"[1, 2]", "expected a JSON object, found list")],
    ids=["not-utf8", "truncated-json", "not-an-object"],
)  # fmt: skip
def test_an_unreadable_sidecar_is_refused_naming_the_file(tmp_path, content, expected):
    save_encoder(tmp_path / "encoder", MSDPModel(ENCODER))
    (tmp_path / "encoder.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"encoder\.json: {expected}") as error:
        load_encoder(tmp_path / "encoder")
    assert "\n" not in str(error.value)


def test_a_scratch_policy_sidecar_without_its_encoder_config_is_refused_naming_the_file(tmp_path):
    encoder, actor = MSDPModel(ENCODER), Actor(AGENT, ENCODER.width, ACTIONS)
    info = PolicyInfo(AGENT, "scratch", "", "vision,ft,proprio", {}, ACTIONS, {})
    save_policy(tmp_path / "policy", actor, encoder, info)
    sidecar = json.loads((tmp_path / "policy.json").read_text())
    del sidecar["encoder_config"]
    (tmp_path / "policy.json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match=r"policy\.json: bad policy sidecar \('encoder_config'\)"):
        load_policy(tmp_path / "policy")


def test_a_checkpoint_from_before_checksums_still_loads_with_a_warning(tmp_path):
    _, policy_path, _, actor = save_frozen_policy(tmp_path)
    sidecar = json.loads((tmp_path / "policy.json").read_text())
    del sidecar["weights_sha256"]
    (tmp_path / "policy.json").write_text(json.dumps(sidecar))
    with pytest.warns(UncheckedCheckpointWarning, match=r"policy\.safetensors: policy\.json has no weights_sha256"):
        loaded = load_policy(policy_path)
    x = torch.randn(3, ENCODER.width)
    torch.testing.assert_close(loaded.actor(x), actor(x))


# -- agent.pt ---------------------------------------------------------------------------------------------------
def learner(folder: Path) -> Learner:
    model = MSDPConfig(width=8)
    TransitionWriter(folder / "log", transition_schema("msdp_frozen", model, ACTIONS), durable=False).close()
    torch.manual_seed(0)
    agent = SACAgent(AGENT, model.width, model.n_tokens, ACTIONS)
    return Learner(agent, Replay(TransitionReader(folder / "log")), [], update_after=10, seed=0)


def test_agent_checkpoint_resumes_verified_and_refuses_damage_naming_the_file(tmp_path):
    saved = learner(tmp_path)
    saved.agent.critic_updates = 7
    path = tmp_path / "agent.pt"
    saved.save(path, {"env_steps": 30})
    resumed = learner(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resumed.resume(path)["env_steps"] == 30 and resumed.agent.critic_updates == 7

    flip_a_byte_of(path, saved.agent.actor.net[0].weight)  # torch.load itself reads this without complaint
    with pytest.raises(CheckpointError, match=r"agent\.pt: damaged, its contents do not match the sha256"):
        learner(tmp_path).resume(path)
    path.write_bytes(path.read_bytes()[:2000])  # cut short, as by a full disk
    with pytest.raises(CheckpointError, match=r"agent\.pt: cannot read it as an agent checkpoint \(") as error:
        learner(tmp_path).resume(path)
    assert "\n" not in str(error.value)


def test_agent_checkpoint_with_nan_weights_is_refused(tmp_path):
    saved = learner(tmp_path)
    with torch.no_grad():
        saved.agent.critic.q.weights[0][0, 0, 0] = float("nan")
    saved.save(tmp_path / "agent.pt", {})
    with pytest.raises(CheckpointError, match=r"agent\.pt: critic\.q\.weights\.0 holds 1 NaN/inf values"):
        learner(tmp_path).resume(tmp_path / "agent.pt")


def test_agent_checkpoint_from_before_digests_still_resumes_with_a_warning(tmp_path):
    saved = learner(tmp_path)
    saved.agent.critic_updates = 3
    saved.save(tmp_path / "agent.pt", {})
    state = torch.load(tmp_path / "agent.pt", weights_only=True)
    del state["sha256"]
    torch.save(state, tmp_path / "agent.pt")
    resumed = learner(tmp_path)
    with pytest.warns(UncheckedCheckpointWarning, match=r"agent\.pt: no sha256 in it"):
        resumed.resume(tmp_path / "agent.pt")
    assert resumed.agent.critic_updates == 3


# -- actor weights from the graph -------------------------------------------------------------------------------
def test_the_weights_gate_accepts_newer_valid_weights_and_leaves_the_current_actor_alone():
    torch.manual_seed(0)
    current, trained = Actor(AGENT, 8, ACTIONS), Actor(AGENT, 8, ACTIONS)
    before = {k: v.clone() for k, v in current.state_dict().items()}
    gate = ActorWeightsGate(current)
    new = gate.accept(actor_to_bytes(trained), "critic_updates=40 env_steps=60")
    x = torch.randn(5, 8)
    torch.testing.assert_close(new(x), trained(x))
    assert new is not current and gate.version == 40 and not new.training
    for key, value in current.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert gate.accept(actor_to_bytes(trained), "critic_updates=41 env_steps=61") is not new


def state_with(change: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    state = {k: v.detach().clone() for k, v in Actor(AGENT, 8, ACTIONS).state_dict().items()}
    if change == "nan":
        state["net.6.weight"][0, 0] = float("nan")
    elif change == "missing":
        del state["net.6.bias"]
    elif change == "shape":
        state["net.0.weight"] = torch.zeros(16, 9)
    elif change == "dtype":
        state["net.0.bias"] = state["net.0.bias"].half()
    return state


@pytest.mark.parametrize(
    ("change", "reason"),
    [("nan", r"net\.6\.weight holds 1 NaN/inf values"),
     ("missing", r"tensor names do not match \(missing net\.6\.bias; unexpected none\)"),
     ("shape", r"shapes do not match, net\.0\.weight is float32\[16, 9\], expected float32\[16, 8\]"),
     ("dtype", r"dtypes do not match, net\.0\.bias is float16\[16\], expected float32\[16\]")],
    ids=["nan", "missing", "shape", "dtype"],
)  # fmt: skip
def test_the_weights_gate_refuses_weights_the_actor_cannot_act_with(change, reason):
    gate = ActorWeightsGate(Actor(AGENT, 8, ACTIONS))
    with pytest.raises(WeightsRefused, match=rf"^actor weights critic_updates=5 env_steps=9: .*{reason}"):
        gate.accept(save(state_with(change)), "critic_updates=5 env_steps=9")
    assert gate.version is None  # refused weights do not count as seen
    assert gate.accept(save(state_with("none")), "critic_updates=5 env_steps=9") is not None
    with pytest.raises(WeightsRefused, match="not a safetensors blob"):
        gate.accept(b"\x80\x04 not weights", "critic_updates=6 env_steps=9")


def test_the_weights_gate_refuses_versions_that_do_not_grow_and_unparsable_labels():
    gate = ActorWeightsGate(Actor(AGENT, 8, ACTIONS))
    blob = actor_to_bytes(Actor(AGENT, 8, ACTIONS))
    gate.accept(blob, "critic_updates=40 env_steps=60")
    for label in ("critic_updates=40 env_steps=60", "critic_updates=12 env_steps=80"):
        with pytest.raises(WeightsRefused, match=r"not newer than the accepted critic_updates=40"):
            gate.accept(blob, label)
    for label in ("", "unlabelled", "critic_updates=x env_steps=1", "env_steps=3 critic_updates=50"):
        with pytest.raises(WeightsRefused, match=r"expected 'critic_updates=N env_steps=M'"):
            gate.accept(blob, label)
    assert gate.version == 40
    gate.accept(blob, "critic_updates=41 env_steps=61")
    assert gate.version == 41

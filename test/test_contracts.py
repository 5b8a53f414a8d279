"""What made an artefact travels with it: a policy knows its encoder, a transition log knows the encoder and the
specs that made it, and every consumer refuses a mismatch naming both sources."""

import json

import numpy as np
import pytest
import torch

from msdp.config import ConfigError
from msdp.specs import ActionSpec, SpecMismatch
from msdp_perception.checkpoint import encoder_identity, save_encoder
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_policy.agent import Actor, AgentConfig, SACAgent
from msdp_policy.learner import Learner
from msdp_policy.policy import PolicyInfo, load_policy, save_policy
from msdp_policy.replay import Replay, log_meta, transition_schema
from msdp_policy.transition_log import TransitionLogError, TransitionReader, TransitionWriter

ENCODER = MSDPConfig(stem_channels=8, width=32, decoder_width=32)
AGENT = AgentConfig(hidden=16, batch_size=8, rlpd=True)
TASK = {"name": "peg", "max_step": 0.02, "max_yaw_step": 0.1}
DEFAULT_ACTION = ActionSpec()


@pytest.fixture
def encoders(tmp_path):
    """Two encoders of the same shape and different weights."""
    torch.manual_seed(0)
    first = save_encoder(tmp_path / "a" / "encoder", MSDPModel(ENCODER))
    second = save_encoder(tmp_path / "b" / "encoder", MSDPModel(ENCODER))
    return first, second


def test_an_encoder_is_identified_by_its_weights_not_its_path(encoders, tmp_path):
    first, second = encoders
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(first.read_bytes())
    assert encoder_identity(first) == encoder_identity(copy) != encoder_identity(second)


def test_a_policy_refuses_an_encoder_other_than_its_own(encoders, tmp_path):
    first, second = encoders
    info = PolicyInfo(AGENT, "msdp_frozen", str(first), "vision,ft,proprio", TASK, 4, {})
    path = save_policy(tmp_path / "policy", Actor(AGENT, ENCODER.width, 4), None, info)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["encoder_identity"] == encoder_identity(first)
    recorded = sidecar["observation_spec"]
    assert {key: recorded[key] for key in ("image_size", "ft_window", "joints")} == {
        "image_size": 64,
        "ft_window": 4,
        "joints": 7,
    }
    assert sidecar["action_spec"] == {"dim": 4, "max_step": 0.02, "max_yaw_step": 0.1}
    assert load_policy(path).info.encoder_checkpoint == str(first)
    with pytest.raises(SpecMismatch, match=r"policy.json was trained on encoder \w{12}, but .*b/encoder"):
        load_policy(path, encoder_checkpoint=second)


def test_a_policy_refuses_an_encoder_with_another_observation_spec(encoders, tmp_path):
    first, _ = encoders
    info = PolicyInfo(AGENT, "msdp_frozen", str(first), "vision,ft,proprio", TASK, 4, {})
    path = save_policy(tmp_path / "policy", Actor(AGENT, ENCODER.width, 4), None, info)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    del sidecar["encoder_identity"]  # a policy saved before identities: the spec still guards it
    sidecar["observation_spec"]["ft_window"] = 8
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(SpecMismatch, match="ft_window 8 vs 4"):
        load_policy(path)


def write_log(folder, encoder, action: ActionSpec = DEFAULT_ACTION) -> None:
    schema = transition_schema("msdp_frozen", ENCODER, 4, log_meta(encoder, ENCODER, action))
    with TransitionWriter(folder, schema, durable=False) as writer:
        for index in range(6):
            writer.append({
                "tokens": np.zeros((ENCODER.n_tokens, ENCODER.width), np.uint16),
                "present": np.ones(ENCODER.n_tokens, bool), "pooled": np.zeros(ENCODER.width, np.float32),
                "episode": np.int64(0), "action": np.zeros(4, np.float32), "reward": np.float32(0),
                "terminal": np.bool_(False), "final": np.bool_(index == 5),
            })  # fmt: skip


def test_a_log_records_its_encoder_and_specs_and_refuses_another_writer(encoders, tmp_path):
    first, second = encoders
    write_log(tmp_path / "log", first)
    meta = TransitionReader(tmp_path / "log").schema.meta
    assert meta["encoder"] == encoder_identity(first) and meta["action_spec"]["dim"] == 4
    with pytest.raises(TransitionLogError, match="come from different sources: encoder"):
        write_log(tmp_path / "log", second)  # e.g. a policy node restarted with another encoder
    with pytest.raises(TransitionLogError, match="action_spec"):
        write_log(tmp_path / "log", first, ActionSpec(max_step=0.01))


def test_rlpd_refuses_an_offline_log_made_by_another_encoder(encoders, tmp_path):
    first, second = encoders
    write_log(tmp_path / "online", first)
    write_log(tmp_path / "offline_same", first)
    write_log(tmp_path / "offline_other", second)
    agent = SACAgent(AGENT, ENCODER.width, ENCODER.n_tokens, 4)
    online = Replay(TransitionReader(tmp_path / "online"))
    Learner(agent, online, [Replay(TransitionReader(tmp_path / "offline_same"))], 1, 0)
    with pytest.raises(TransitionLogError, match=r"online and .*offline_other come from different sources"):
        Learner(agent, online, [Replay(TransitionReader(tmp_path / "offline_other"))], 1, 0)


def test_a_log_from_before_meta_still_reads(tmp_path, encoders):
    write_log(tmp_path / "log", encoders[0])
    schema_file = tmp_path / "log" / "schema.json"
    schema_file.write_text(json.dumps(json.loads(schema_file.read_text())["fields"]))  # the old layout
    reader = TransitionReader(tmp_path / "log")
    assert len(reader) == 6 and reader.schema.meta == {}
    schema_file.write_text("[1, 2]")
    with pytest.raises(TransitionLogError, match="schema.json: not a transition log schema"):
        TransitionReader(tmp_path / "log")


def test_training_refuses_an_environment_whose_camera_the_encoder_cannot_read(encoders, tmp_path):
    from msdp.config import from_dict
    from msdp_policy.training import TrainConfig, train

    config = from_dict(TrainConfig, {"steps": 1, "env": {"sim": {"image_size": 32}}})
    with pytest.raises(ConfigError, match="image_size 64 vs 32"):
        train(config, encoders[0], tmp_path / "run", progress=False)


def test_a_log_from_before_the_roi_mixes_with_one_that_records_the_whole_frame(encoders, tmp_path):
    """Spec fields added later (the ROI) compare with their defaults: an older log resumes and mixes in."""
    first, _ = encoders
    write_log(tmp_path / "old", first)
    schema_file = tmp_path / "old" / "schema.json"
    schema = json.loads(schema_file.read_text())
    schema["meta"]["observation_spec"].pop("roi", None)
    schema_file.write_text(json.dumps(schema))
    write_log(tmp_path / "old", first)  # resumed by a run that records the ROI: the same source
    schema["meta"]["observation_spec"]["roi"] = [0.1, 0.0, 0.9, 1.0]
    schema_file.write_text(json.dumps(schema))
    with pytest.raises(TransitionLogError, match="observation_spec"):
        write_log(tmp_path / "old", first)


def test_logs_that_store_other_fields_are_not_mixed(encoders, tmp_path):
    """A log of another layout (here: a 3-D action) is refused by a writer that would append to it and by RLPD."""
    first, _ = encoders
    write_log(tmp_path / "online", first)
    meta = log_meta(first, ENCODER, ActionSpec(dim=3))
    with pytest.raises(TransitionLogError, match="this run stores other fields than .*schema.json"):
        TransitionWriter(tmp_path / "online", transition_schema("msdp_frozen", ENCODER, 3, meta), durable=False)
    TransitionWriter(tmp_path / "other", transition_schema("msdp_frozen", ENCODER, 3, meta), durable=False).close()
    agent = SACAgent(AGENT, ENCODER.width, ENCODER.n_tokens, 4)
    with pytest.raises(TransitionLogError, match="other stores other fields than .*online"):
        Learner(
            agent, Replay(TransitionReader(tmp_path / "online")), [Replay(TransitionReader(tmp_path / "other"))], 1, 0
        )

"""The MSDP model: token layout, masking rules, sensor masking at run time, losses and checkpoints."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msdp.config import ConfigError, from_dict
from msdp_perception.checkpoint import CheckpointError, load_encoder, save_encoder
from msdp_perception.encoder import EncodedObservation, FrozenEncoder, pack_embedding, unpack_embedding
from msdp_perception.model import Attention, MSDPConfig, MSDPModel
from msdp_perception.observation import Observation

SMALL = MSDPConfig(stem_channels=8, width=32, decoder_width=32)


def batch(n: int = 6, seed: int = 0, action_dim: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = {
        "image": torch.randint(0, 256, (n, 64, 64, 3), generator=g, dtype=torch.uint8),
        "wrench": torch.randn(n, 4, 6, generator=g) * 5,
        "proprio": torch.randn(n, 14, generator=g),
        "present": torch.ones(n, 3, dtype=torch.bool),
        "action": torch.randn(n, action_dim, generator=g),
    }
    b.update({f"next_{k}": b[k].roll(1, 0) for k in ("image", "wrench", "proprio", "present")})
    return b


def test_default_config_is_the_paper_and_validates():
    c = MSDPConfig()
    assert (c.vision_tokens, c.n_tokens, c.width, c.depth, c.heads, c.mlp_ratio, c.mask_ratio) == (
        64,
        66,
        128,
        2,
        4,
        2.0,
        0.7,
    )
    with pytest.raises(ConfigError, match="vision_grid"):
        from_dict(MSDPConfig, {"vision_grid": 6})
    with pytest.raises(ConfigError, match="heads"):
        from_dict(MSDPConfig, {"width": 30})
    with pytest.raises(ConfigError, match="objective"):
        from_dict(MSDPConfig, {"objective": "contrastive"})


def test_random_masking_keeps_30_percent_never_no_vision_and_never_an_absent_sensor():
    model = MSDPModel(SMALL)
    present = torch.ones(500, 3, dtype=torch.bool)
    present[::2, 1] = False  # F/T absent in every other sample
    keep = model.random_keep(present, torch.Generator().manual_seed(0))
    assert not keep[::2, 64].any()
    assert (keep[1::2].sum(1) == round(66 * 0.3)).all()
    assert 0.2 < keep[1::2, 64].float().mean() < 0.4  # the F/T token is kept about 30 % of the time
    extreme = MSDPModel(MSDPConfig(stem_channels=8, width=32, decoder_width=32, mask_ratio=0.99))
    keep = extreme.random_keep(torch.ones(500, 3, dtype=torch.bool), torch.Generator().manual_seed(1))
    assert (keep[:, :64].sum(1) >= 1).all()


def test_a_masked_sensor_has_no_influence_on_the_embedding():
    torch.manual_seed(0)
    model = MSDPModel(SMALL).eval()
    b = batch(2)
    present = torch.tensor([[True, False, True]] * 2)
    out = model.embed(b["image"], b["wrench"], b["proprio"], present)
    other = model.embed(b["image"], b["wrench"] * -100, b["proprio"], present)
    torch.testing.assert_close(out.tokens, other.tokens)
    torch.testing.assert_close(out.pooled, other.pooled)
    assert not out.token_present[:, 64].any() and (out.tokens[:, 64] == 0).all()
    # pooled = mean over (mean of vision tokens, proprioception token) when F/T is masked
    expected = (out.tokens[:, :64].mean(1) + out.tokens[:, 65]) / 2
    torch.testing.assert_close(out.pooled, expected)
    # and the wrench does matter when it is present
    full = torch.ones(2, 3, dtype=torch.bool)
    a = model.embed(b["image"], b["wrench"], b["proprio"], full).pooled
    assert not torch.allclose(a, model.embed(b["image"], b["wrench"] * -100, b["proprio"], full).pooled)


def test_rows_with_different_numbers_of_tokens_encode_as_if_alone():
    torch.manual_seed(0)
    model = MSDPModel(SMALL).eval()
    b = batch(3)
    present = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    together = model.embed(b["image"], b["wrench"], b["proprio"], present)
    for i in range(3):
        alone = model.embed(b["image"][i : i + 1], b["wrench"][i : i + 1], b["proprio"][i : i + 1], present[i : i + 1])
        torch.testing.assert_close(together.tokens[i], alone.tokens[0], atol=1e-5, rtol=1e-5)


def test_reconstruction_scores_only_masked_tokens_and_learns():
    torch.manual_seed(0)
    model = MSDPModel(SMALL)
    b = batch(8)
    keep = model.random_keep(b["present"], torch.Generator().manual_seed(0))
    out = model(b, keep=keep)
    assert out["scored_vision"] == (~keep[:, :64]).sum()
    assert out["scored_ft"] == (~keep[:, 64]).sum()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = out["loss"].item()
    for _ in range(150):
        loss = model(b, keep=keep)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_prediction_objective_uses_the_action_token_and_scores_every_next_token():
    torch.manual_seed(0)
    model = MSDPModel(MSDPConfig(stem_channels=8, width=32, decoder_width=32, objective="prediction"))
    b = batch(4)
    keep = model.random_keep(b["present"], torch.Generator().manual_seed(0))
    out = model(b, keep=keep)
    assert out["scored_vision"] == 4 * 64 and out["scored_ft"] == 4
    changed = model(dict(b, action=b["action"] + 3.0), keep=keep)
    assert not torch.allclose(out["pred"]["ft"], changed["pred"]["ft"])


def test_attention_is_scaled_dot_product_attention():
    """Attention is written out as matmuls for speed; it must compute what F.scaled_dot_product_attention
    computed when the existing checkpoints were trained, padding mask included."""
    torch.manual_seed(0)
    attention = Attention(32, 4)
    x = torch.randn(3, 10, 32)
    attend = torch.rand(3, 10) > 0.4
    attend[:, 0] = True
    for mask in (None, attend):
        q, k, v = attention.qkv(x).view(3, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :])
        expected = attention.proj(heads.transpose(1, 2).reshape(3, 10, 32))
        torch.testing.assert_close(attention(x, mask), expected)


def test_normaliser_statistics_come_from_the_data():
    model = MSDPModel(SMALL)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)
    wrench = rng.normal(3.0, 2.0, (50, 4, 6)).astype(np.float32)
    proprio = rng.normal(-1.0, 0.5, (50, 14)).astype(np.float32)
    actions = np.full((50, 4), np.nan, np.float32)
    actions[:40] = rng.normal(0, 0.01, (40, 4))
    model.normalizer.fit(images, wrench, proprio, actions)
    n = model.normalizer
    scale = np.array([1.0, 1.0, 1.0, 0.1, 0.1, 0.1])  # F/T readings are log-compressed before standardising
    compressed = np.sign(wrench) * np.log1p(np.abs(wrench) / scale)
    np.testing.assert_allclose(n.wrench_mean.numpy(), compressed.reshape(-1, 6).mean(0), rtol=1e-4)
    np.testing.assert_allclose(n.wrench_std.numpy(), compressed.reshape(-1, 6).std(0), rtol=1e-4)
    raw = MSDPModel(MSDPConfig(stem_channels=8, width=32, decoder_width=32, force_log_scale=0, torque_log_scale=0))
    raw.normalizer.fit(images, wrench, proprio, actions)
    np.testing.assert_allclose(raw.normalizer.wrench_mean.numpy(), wrench.reshape(-1, 6).mean(0), rtol=1e-4)
    np.testing.assert_allclose(n.proprio_std.numpy(), proprio.std(0), rtol=1e-4)
    np.testing.assert_allclose(n.action_std.numpy(), actions[:40].std(0), rtol=1e-4)
    np.testing.assert_allclose(n.image_mean.numpy(), images.reshape(-1, 3).mean(0) / 255, rtol=1e-4)


def test_checkpoint_round_trip_gives_identical_embeddings_and_never_unpickles(tmp_path):
    torch.manual_seed(0)
    model = MSDPModel(SMALL)
    model.normalizer.wrench_std.fill_(7.0)
    path = save_encoder(tmp_path / "enc", model, {"steps": 3})
    sidecar = json.loads((tmp_path / "enc.json").read_text())
    assert sidecar["config"]["width"] == 32 and sidecar["normalization"]["wrench_std"] == [7.0] * 6
    assert sidecar["layout"]["token_order"][64:] == ["ft", "proprio"] and "git_revision" in sidecar["provenance"]
    loaded, _ = load_encoder(path)
    b = batch(2)
    a = model.eval().embed(b["image"], b["wrench"], b["proprio"], b["present"])
    c = loaded.embed(b["image"], b["wrench"], b["proprio"], b["present"])
    torch.testing.assert_close(a.tokens, c.tokens)

    (tmp_path / "enc.safetensors").write_bytes(b"\x80\x04garbage pickle")
    with pytest.raises(CheckpointError, match="enc.safetensors"):
        load_encoder(tmp_path / "enc")
    sidecar["config"]["width"] = 64
    save_encoder(tmp_path / "other", model)
    (tmp_path / "other.json").write_text(json.dumps({**sidecar, "format": "msdp-encoder/1"}))
    with pytest.raises(CheckpointError, match="do not match"):
        load_encoder(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "missing")


def test_packed_embedding_marks_masked_tokens_with_nan_rows():
    torch.manual_seed(0)
    encoder = FrozenEncoder(MSDPModel(SMALL))
    obs = Observation(
        0.0,
        np.zeros((64, 64, 3), np.uint8),
        np.ones((4, 6), np.float32),
        np.zeros(14, np.float32),
        {"vision": True, "ft": False, "proprio": True},
    )
    encoded = encoder.encode(obs)
    rows = pack_embedding(encoded)
    assert rows.shape == (67, 32) and np.isnan(rows[64]).all() and np.isfinite(np.delete(rows, 64, 0)).all()
    back = unpack_embedding(rows)
    assert isinstance(back, EncodedObservation)
    np.testing.assert_array_equal(back.token_present, encoded.token_present)
    np.testing.assert_array_equal(back.tokens, encoded.tokens)
    np.testing.assert_array_equal(back.pooled, encoded.pooled)
    panel = encoder.reconstruction_panel(obs)
    assert panel.shape == (64, 192, 3) and panel.dtype == np.uint8
    with pytest.raises(ValueError, match="every sensor"):
        encoder.encode(Observation(0.0, obs.image, obs.wrench, obs.proprio, dict.fromkeys(obs.present, False)))

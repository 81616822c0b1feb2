"""Parity of the RadCLIP wrapper with open_clip itself and with Hugging Face transformers' CLIPModel."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from radretrieve.models.loading import load_model

TEXTS = ["axial CT of the head: no acute findings", "chest x-ray", "hyperdense lesion in the lower abdomen"]


def _images(n=4, size=64):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def test_parity_with_open_clip(tiny_model, tmp_path):
    import open_clip

    cfg = dict(tiny_model.config.clip)
    (tmp_path / "radclip-parity-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "radclip-parity-tiny.json")
    ref = open_clip.create_model("radclip-parity-tiny", pretrained=None).eval()
    ref.load_state_dict(tiny_model.clip.state_dict())
    imgs = _images()
    tokens = open_clip.tokenize(TEXTS, context_length=cfg["text_cfg"]["context_length"])
    with torch.no_grad():
        want_img = F.normalize(ref.encode_image(imgs), dim=-1)
        want_txt = F.normalize(ref.encode_text(tokens), dim=-1)
    assert torch.allclose(tiny_model.encode_images(imgs), want_img, atol=1e-6)
    assert torch.allclose(tiny_model.encode_text(TEXTS), want_txt, atol=1e-6)


def _tiny_hf_clip():
    import transformers

    text = {
        "vocab_size": 49408,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "hidden_act": "quick_gelu",
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
        "hidden_act": "quick_gelu",
    }
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=128)
    torch.manual_seed(3)
    return transformers.CLIPModel(config).eval()


def _features(out):
    """transformers 4.x returns a tensor, 5.x may return an output object holding it."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_parity_with_transformers_clip(tmp_path):
    import open_clip

    hf = _tiny_hf_clip()
    path = tmp_path / "RadCLIP-tiny.pth"
    torch.save(hf.state_dict(), path)
    model = load_model("radclip-tiny", weights=str(path), device="cpu")
    imgs = _images()
    tokens = open_clip.tokenize(TEXTS, context_length=64)
    with torch.no_grad():
        want_img = F.normalize(_features(hf.get_image_features(pixel_values=imgs)), dim=-1)
        want_txt = F.normalize(_features(hf.get_text_features(input_ids=tokens)), dim=-1)
    assert torch.allclose(model.encode_images(imgs), want_img, atol=1e-4)
    assert torch.allclose(model.encode_text(TEXTS), want_txt, atol=1e-4)
    # the converted model differs from the random-init one: weights were really loaded
    assert model.fingerprint != load_model("radclip-tiny", device="cpu").fingerprint


def test_fast_text_encoder_equals_the_full_model(tiny_model, tmp_path):
    """The stored text tower used by `radretrieve search` gives the model's own text embeddings."""
    from radretrieve.outdir.text_tower import load_text_tower, save_text_tower

    assert save_text_tower(tiny_model, tmp_path) is not None
    fast = load_text_tower(tmp_path, tiny_model.fingerprint)
    texts = TEXTS + ["lesion " * 80]  # one past the context length: truncated the same way
    assert torch.allclose(fast.encode_text(texts), tiny_model.encode_text(texts), atol=1e-5)
    assert load_text_tower(tmp_path, "0" * 32) is None  # another model's tower is never used

"""Golden outputs of Hugging Face transformers' CLIPVisionModelWithProjection for the CLIP runtime's tests.

Run on a machine with PyTorch + transformers + safetensors (no .NET needed):
    python3 scripts/golden/hf_clip_vision.py OUT_DIR
Writes OUT_DIR/<activation>/{config.json, model.safetensors, golden.safetensors} for quick_gelu and gelu:
a tiny randomly initialised model saved with save_pretrained, a batch of pixel values and the model's
outputs (image_embeds, last_hidden_state), computed on the CPU in float32.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection


def build(out_dir: str, act: str, seed: int) -> None:
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, num_channels=3, hidden_act=act, layer_norm_eps=1e-5,
        projection_dim=16, attn_implementation="eager")
    model = CLIPVisionModelWithProjection(cfg).eval()
    # Random init leaves LayerNorms at identity and biases at zero; perturb everything so every
    # parameter (including the (sic) pre_layrnorm) changes the output.
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.2)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        out = model(pixel_values=pixels)
    folder = os.path.join(out_dir, act)
    model.save_pretrained(folder, safe_serialization=True)
    save_file({
        "pixel_values": pixels.contiguous(),
        "image_embeds": out.image_embeds.contiguous(),
        "last_hidden_state": out.last_hidden_state.contiguous(),
    }, os.path.join(folder, "golden.safetensors"), metadata={
        "transformers": transformers.__version__, "torch": torch.__version__, "seed": str(seed)})
    print(act, "image_embeds[0,:4] =", out.image_embeds[0, :4].tolist())


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "hf-clip"
    for i, act in enumerate(["quick_gelu", "gelu"]):
        build(out, act, 1234 + i)
    print("transformers", transformers.__version__, "torch", torch.__version__)

"""Golden outputs of Hugging Face transformers' Llama, Mistral and Qwen2 causal LMs for the decoder runtime's tests.

NOT RUN YET: no machine with transformers was at hand for issue 12, so the tests compare the runtime against an
independent loop-based implementation instead (tests/MergeDsl.Tests/DecoderReference.fs). Run this on a machine
with PyTorch + transformers + safetensors + tokenizers (no .NET needed):

    python3 scripts/golden/hf_llama_family.py OUT_DIR [BYTE_TOKENIZER_JSON]

For each case it writes OUT_DIR/<case>/ with what save_pretrained wrote (config.json, model.safetensors) and
golden.safetensors holding input_ids [2, 9] (int64), logits [2, 9, vocab] (float32, CPU, eager attention) and
greedy [1, 8] (int64: 8 tokens greedily generated after input_ids[0], with the KV cache).
With BYTE_TOKENIZER_JSON (a tokenizer.json written by `ByteTokenizer.ToTokenizerJson`), it also checks that
HF `tokenizers` encodes a multilingual sample to one id per UTF-8 byte and decodes it back.
"""
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

COMMON = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, max_position_embeddings=64,
              rms_norm_eps=1e-6, attn_implementation="eager")

# The same family/size combinations as tests/MergeDsl.Tests/DecoderTests.fs's tinyConfigs.
CASES = {
    "llama-untied-gqa": (LlamaForCausalLM, LlamaConfig(
        **COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=4, rope_theta=10000.0, tie_word_embeddings=False)),
    "llama-tied-mqa-bias": (LlamaForCausalLM, LlamaConfig(
        **{**COMMON, "intermediate_size": 20, "rms_norm_eps": 1e-5}, num_attention_heads=4, num_key_value_heads=1,
        head_dim=6, rope_theta=50.0, tie_word_embeddings=True, attention_bias=True, mlp_bias=True)),
    "mistral-untied-gqa": (MistralForCausalLM, MistralConfig(
        **COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=4, rope_theta=1000.0, sliding_window=32,
        tie_word_embeddings=False)),
    "qwen2-tied-gqa": (Qwen2ForCausalLM, Qwen2Config(
        **{**COMMON, "num_hidden_layers": 3}, num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0,
        tie_word_embeddings=True, use_sliding_window=False)),
    "qwen2-untied-mha": (Qwen2ForCausalLM, Qwen2Config(
        **COMMON, num_attention_heads=2, num_key_value_heads=2, rope_theta=100.0, tie_word_embeddings=False,
        use_sliding_window=False)),
    # rope_scaling, as tests/MergeDsl.Tests/RopeScalingTests.fs's tiny Llamas: θ 10, head_dim 8 and an original
    # context of 32 put the four rotary pairs in all three llama3 bands.
    "llama-rope-llama3": (LlamaForCausalLM, LlamaConfig(
        **COMMON, num_attention_heads=2, num_key_value_heads=1, head_dim=8, rope_theta=10.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32})),
    "llama-rope-linear": (LlamaForCausalLM, LlamaConfig(
        **COMMON, num_attention_heads=2, num_key_value_heads=1, head_dim=8, rope_theta=10.0, tie_word_embeddings=False,
        rope_scaling={"type": "linear", "factor": 3.0})),
}


def build(out_dir: str, name: str, cls, cfg, seed: int) -> None:
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    # Random init leaves norms at 1 and biases at 0; perturb everything so every parameter moves the logits.
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.3)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, cfg.vocab_size, (2, 9), generator=g)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        greedy = model.generate(ids[:1], max_new_tokens=8, do_sample=False, use_cache=True,
                                pad_token_id=0, eos_token_id=None)[:, ids.shape[1]:]
    folder = os.path.join(out_dir, name)
    model.save_pretrained(folder, safe_serialization=True)
    save_file({"input_ids": ids.contiguous(), "logits": logits.float().contiguous(), "greedy": greedy.contiguous()},
              os.path.join(folder, "golden.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__, "seed": str(seed)})
    print(name, "logits[0,0,:4] =", logits[0, 0, :4].tolist(), "greedy =", greedy[0].tolist())


def check_byte_tokenizer(path: str) -> None:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(path)
    text = "Grüße, 世界!\n\ttabs  and  spaces"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert ids == list(text.encode("utf-8")), ids
    assert tok.decode(ids) == text
    assert tok.token_to_id("<s>") == 256 and tok.token_to_id("</s>") == 257
    print("byte tokenizer.json: one id per byte, round trip ok")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "hf-llama-family"
    for i, (case, (cls, cfg)) in enumerate(CASES.items()):
        build(out, case, cls, cfg, 4321 + i)
    if len(sys.argv) > 2:
        check_byte_tokenizer(sys.argv[2])
    print("transformers", transformers.__version__, "torch", torch.__version__)

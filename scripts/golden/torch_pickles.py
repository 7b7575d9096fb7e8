"""Real torch.save files for the restricted unpickler's tests (tests/MergeDsl.Tests/TorchFixtureTests.fs).

Run with any PyTorch (these were made with Debian 12's python3-torch 1.13.1):

    python3 scripts/golden/torch_pickles.py tests/MergeDsl.Tests/fixtures/torch

It writes, into OUT_DIR:
  zip/pytorch_model.bin      torch.save (zip format, torch >= 1.6) of a state dict
  legacy/pytorch_model.bin   the same dict with _use_new_zipfile_serialization=False (legacy format)
  sharded/                   two shards + pytorch_model.bin.index.json, as save_pretrained shards them
  peft/adapter_model.bin     a PEFT-style LoRA adapter state dict (lora_A / lora_B names) + adapter_config.json
and prints every tensor's name, dtype, shape, stride, storage offset and values (as float64 repr), which the
tests carry as literals. Values are small exact numbers, so every dtype holds them exactly.
"""
import json
import os
import sys
from collections import OrderedDict

import torch


def state_dict():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4 - 1  # -1 .. 1.75, exact in f16/bf16
    shared = torch.tensor([1.5, -2.0, 3.25, 4.0, -5.5, 6.0], dtype=torch.float32)
    d = OrderedDict()
    d["model.embed_tokens.weight"] = base.clone()
    d["model.layers.0.self_attn.q_proj.weight"] = base.t()  # a transposed view: strides (1, 4)
    d["model.layers.0.mlp.up_proj.weight"] = base.to(torch.float16)
    d["model.layers.0.input_layernorm.weight"] = torch.tensor([0.5, -0.25, 2.0], dtype=torch.bfloat16)
    d["model.norm.weight"] = shared[1:4]  # a view at offset 1 of a storage shared with the next two
    d["lm_head.weight"] = shared.view(2, 3)
    d["position_ids"] = torch.tensor([[7, -8, 9, 2**40]], dtype=torch.int64)
    return d


def describe(path, d):
    print(f"# {path}")
    for name, t in d.items():
        values = [repr(float(x)) if t.is_floating_point() else str(int(x)) for x in t.flatten().tolist()]
        print(f"{name}\t{str(t.dtype)}\t{list(t.shape)}\t{list(t.stride())}\t{t.storage_offset()}\t{' '.join(values)}")


def main(out):
    d = state_dict()
    for sub, new_zip in (("zip", True), ("legacy", False)):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        path = os.path.join(out, sub, "pytorch_model.bin")
        torch.save(d, path, _use_new_zipfile_serialization=new_zip)
        describe(path, torch.load(path))
    sharded = os.path.join(out, "sharded")
    os.makedirs(sharded, exist_ok=True)
    names = list(d)
    shards = {"pytorch_model-00001-of-00002.bin": names[:3], "pytorch_model-00002-of-00002.bin": names[3:]}
    weight_map = {}
    for file, keys in shards.items():
        # save_pretrained clones each shard's tensors, so a shard holds only its own storages.
        torch.save(OrderedDict((k, d[k].clone()) for k in keys), os.path.join(sharded, file))
        weight_map.update({k: file for k in keys})
    total = sum(t.numel() * t.element_size() for t in d.values())
    with open(os.path.join(sharded, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    peft = os.path.join(out, "peft")
    os.makedirs(peft, exist_ok=True)
    a = torch.tensor([[1.0, 0.0, -1.0, 0.5], [0.25, 2.0, 0.0, -0.5]])  # rank 2, in 4
    b = torch.tensor([[1.0, -1.0], [0.0, 0.5], [2.0, 0.25]])  # out 3
    lora = OrderedDict()
    lora["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = a
    lora["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] = b
    torch.save(lora, os.path.join(peft, "adapter_model.bin"))
    with open(os.path.join(peft, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
                   "fan_in_fan_out": False, "bias": "none"}, f, indent=2)
    describe(os.path.join(peft, "adapter_model.bin"), torch.load(os.path.join(peft, "adapter_model.bin")))
    print(f"# torch {torch.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])

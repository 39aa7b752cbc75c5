#!/usr/bin/python3
"""Writes small random DeepSeek-V2/V3 checkpoints (HF layout) for the parity tests.

Own safetensors writer and dtype encoders (BF16, F16, OCP FP8 E4M3FN with 128x128 block scales).
Every config is deterministic (fixed seed), so a checkpoint can be regenerated at any time.

    /usr/bin/python3 make_checkpoint.py --config v3like --out /tmp/ckpt/v3like
    /usr/bin/python3 make_checkpoint.py --all --out /tmp/ckpt      # one sub-directory per config
"""

import argparse
import json
import math
import os
import struct
import sys
import zlib

import numpy as np

# ----------------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------------

_COMMON = {
    "model_type": "deepseek_v3",
    "architectures": ["DeepseekV3ForCausalLM"],
    "hidden_act": "silu",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "max_position_embeddings": 16384,
    "tie_word_embeddings": False,
    "use_cache": True,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "pretraining_tp": 1,
}

CONFIGS = {
    # V3 style: q LoRA, sigmoid + noaux_tc with correction bias, grouped routing, normalised and
    # scaled weights, one shared expert, first layer dense, YaRN (mscale == mscale_all_dim), BF16.
    "v3like": dict(
        _COMMON, seed=11, storage="BF16", bias_range=(-1.3, 0.0),
        vocab_size=512, hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        n_routed_experts=16, num_experts_per_tok=4, n_shared_experts=1, n_group=4, topk_group=2,
        topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True,
        routed_scaling_factor=2.5, first_k_dense_replace=1, moe_layer_freq=1,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        torch_dtype="bfloat16"),
    # V2-Lite style: no q LoRA, softmax + greedy, unnormalised weights with scaling 1.0, two shared
    # experts, plain RoPE, every layer MoE (first_k_dense_replace 0), v_head_dim != nope dim, F32.
    "v2lite": dict(
        _COMMON, seed=22, storage="F32",
        vocab_size=400, hidden_size=96, intermediate_size=192, moe_intermediate_size=48,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=None, kv_lora_rank=48, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=24,
        n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=2, n_group=1, topk_group=1,
        topk_method="greedy", scoring_func="softmax", norm_topk_prob=False,
        routed_scaling_factor=1.0, first_k_dense_replace=0, moe_layer_freq=1,
        rope_scaling=None, rope_theta=10000.0, torch_dtype="float32"),
    # V2 style: q LoRA, softmax + group_limited_greedy, norm_topk_prob with scaling 16 (tests the
    # always-scale decision), MoE every 2nd layer, YaRN with mscale != mscale_all_dim, F16.
    "v2": dict(
        _COMMON, seed=33, storage="F16",
        vocab_size=600, hidden_size=112, intermediate_size=224, moe_intermediate_size=40,
        num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
        q_lora_rank=64, kv_lora_rank=64, qk_nope_head_dim=16, qk_rope_head_dim=32, v_head_dim=16,
        n_routed_experts=16, num_experts_per_tok=3, n_shared_experts=2, n_group=4, topk_group=2,
        topk_method="group_limited_greedy", scoring_func="softmax", norm_topk_prob=True,
        routed_scaling_factor=16.0, first_k_dense_replace=1, moe_layer_freq=2,
        rope_scaling={"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 1024,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 1.0},
        rope_theta=10000.0, torch_dtype="float16"),
    # V3 FP8 style: q_lora_rank 0 (= none), no shared experts, a single kept group (topk_group 1),
    # FP8 E4M3 linears with 128x128 block scales and dims that are not multiples of 128, BF16 for
    # the rest, F32 correction bias, plus an MTP layer (index num_hidden_layers) to be ignored.
    "fp8": dict(
        _COMMON, seed=44, storage="FP8",
        vocab_size=320, hidden_size=160, intermediate_size=200, moe_intermediate_size=48,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, num_nextn_predict_layers=1,
        q_lora_rank=0, kv_lora_rank=96, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        n_routed_experts=12, num_experts_per_tok=3, n_shared_experts=0, n_group=3, topk_group=1,
        topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True,
        routed_scaling_factor=2.5, first_k_dense_replace=1, moe_layer_freq=1,
        rope_scaling={"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        torch_dtype="bfloat16",
        quantization_config={"activation_scheme": "dynamic", "fmt": "e4m3",
                             "quant_method": "fp8", "weight_block_size": [128, 128]}),
}
# Same tensors as "fp8", written as 3 shards + model.safetensors.index.json (a weight and its
# scale_inv usually land in different shards).
CONFIGS["fp8sharded"] = dict(CONFIGS["fp8"], shards=3)

# Keys that are generator settings, not HF config fields.
_PRIVATE = ("seed", "storage", "shards", "bias_range")

# ----------------------------------------------------------------------------------------------
# dtype encoders
# ----------------------------------------------------------------------------------------------


def to_bf16_bits(a):
    """float -> bf16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def _e4m3_positive_values():
    v = []
    for code in range(0x7F):          # 0x00 .. 0x7e, 0x7f is NaN
        e, m = code >> 3, code & 7
        v.append(m * 2.0 ** -9 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7))
    return np.array(v)


_E4M3_POS = _e4m3_positive_values()


def to_e4m3_codes(a):
    """float -> OCP E4M3FN codes (uint8), round to nearest even, saturating at +-448."""
    a = np.asarray(a, dtype=np.float64)
    mag = np.minimum(np.abs(a), 448.0)
    hi = np.clip(np.searchsorted(_E4M3_POS, mag), 1, len(_E4M3_POS) - 1)
    lo = hi - 1
    dlo = mag - _E4M3_POS[lo]
    dhi = _E4M3_POS[hi] - mag
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    code = np.where(np.signbit(a) & (code != 0), code | 0x80, code)
    return code.astype(np.uint8)


def quantize_fp8_blocks(w, block=(128, 128)):
    """w [R, C] -> (codes uint8 [R, C], scale_inv float32 [ceil(R/br), ceil(C/bc)])."""
    R, C = w.shape
    br, bc = block
    nr, nc = -(-R // br), -(-C // bc)
    scale = np.ones((nr, nc), dtype=np.float32)
    codes = np.zeros((R, C), dtype=np.uint8)
    for i in range(nr):
        for j in range(nc):
            blk = w[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
            amax = float(np.max(np.abs(blk)))
            s = np.float32(amax / 448.0) if amax > 0 else np.float32(1.0)
            scale[i, j] = s
            codes[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = to_e4m3_codes(blk / np.float64(s))
    return codes, scale


# ----------------------------------------------------------------------------------------------
# safetensors writer
# ----------------------------------------------------------------------------------------------


def encode_tensor(arr, dtype):
    """(dtype string, shape, raw bytes) for a float array stored as `dtype`."""
    arr = np.asarray(arr)
    if dtype == "F32":
        raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
    elif dtype == "F16":
        raw = np.ascontiguousarray(arr, dtype="<f2").tobytes()
    elif dtype == "BF16":
        raw = to_bf16_bits(arr).astype("<u2").tobytes()
    elif dtype == "F8_E4M3":          # arr already holds the uint8 codes
        raw = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    else:
        raise ValueError(dtype)
    return dtype, list(arr.shape), raw


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes), written in the given order."""
    header = {"__metadata__": metadata or {"format": "pt"}}
    off = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-len(hb)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, _, _, raw in tensors:
            f.write(raw)
    return off


# ----------------------------------------------------------------------------------------------
# random weights
# ----------------------------------------------------------------------------------------------


def _layer_tensors(cfg, rng, i, moe, add):
    D = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    nope, r, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kvl = cfg["kv_lora_rank"]
    qlr = cfg.get("q_lora_rank") or 0

    def lin(out_f, in_f, gain=1.0):
        return rng.standard_normal((out_f, in_f)) * (gain / math.sqrt(in_f))

    def norm(n):
        return 1.0 + 0.1 * rng.standard_normal(n)

    p = "model.layers.%d." % i
    add(p + "input_layernorm.weight", norm(D), "norm")
    add(p + "post_attention_layernorm.weight", norm(D), "norm")
    a = p + "self_attn."
    if qlr > 0:
        add(a + "q_a_proj.weight", lin(qlr, D), "linear")
        add(a + "q_a_layernorm.weight", norm(qlr), "norm")
        add(a + "q_b_proj.weight", lin(H * (nope + r), qlr, 1.3), "linear")
    else:
        add(a + "q_proj.weight", lin(H * (nope + r), D, 1.3), "linear")
    add(a + "kv_a_proj_with_mqa.weight", lin(kvl + r, D), "linear")
    add(a + "kv_a_layernorm.weight", norm(kvl), "norm")
    add(a + "kv_b_proj.weight", lin(H * (nope + vd), kvl, 1.3), "linear")
    add(a + "o_proj.weight", lin(D, H * vd, 0.9), "linear")
    m = p + "mlp."
    if moe:
        E = cfg["n_routed_experts"]
        I = cfg["moe_intermediate_size"]
        # Sigmoid scores saturate, so their logits stay moderate; softmax routing gets wider logits
        # (both keep the top-k decision gaps large compared with bf16 rounding noise).
        add(m + "gate.weight", lin(E, D, 1.5 if cfg["scoring_func"] == "sigmoid" else 3.0), "gate")
        if cfg["topk_method"] == "noaux_tc":
            # Mostly negative biases: the kept groups' biased choice scores are often negative,
            # which exercises "dropped groups are -inf, not 0".
            lo, hi = cfg.get("bias_range", (-0.9, 0.15))
            add(m + "gate.e_score_correction_bias", rng.uniform(lo, hi, E), "bias")
        wsum = cfg["routed_scaling_factor"] if cfg["norm_topk_prob"] else 1.0
        for e in range(E):
            x = m + "experts.%d." % e
            add(x + "gate_proj.weight", lin(I, D), "linear")
            add(x + "up_proj.weight", lin(I, D), "linear")
            add(x + "down_proj.weight", lin(D, I, 1.2 / wsum), "linear")
        ns = cfg.get("n_shared_experts") or 0
        if ns > 0:
            Is = I * ns
            add(m + "shared_experts.gate_proj.weight", lin(Is, D), "linear")
            add(m + "shared_experts.up_proj.weight", lin(Is, D), "linear")
            add(m + "shared_experts.down_proj.weight", lin(D, Is, 0.8), "linear")
    else:
        I = cfg["intermediate_size"]
        add(m + "gate_proj.weight", lin(I, D), "linear")
        add(m + "up_proj.weight", lin(I, D), "linear")
        add(m + "down_proj.weight", lin(D, I, 0.9), "linear")


def _is_moe(cfg, i):
    return (cfg["n_routed_experts"] > 0 and i >= cfg["first_k_dense_replace"]
            and i % cfg["moe_layer_freq"] == 0)


def build_tensors(cfg):
    """Ordered list of (name, dtype, shape, raw bytes) for a config."""
    rng = np.random.default_rng(cfg["seed"])
    storage = cfg["storage"]
    D, V = cfg["hidden_size"], cfg["vocab_size"]
    out = []

    def add(name, arr, kind):
        arr = np.asarray(arr, dtype=np.float64)
        if kind == "bias":
            out.append((name,) + encode_tensor(arr, "F32"))
        elif storage == "FP8":
            if kind == "linear":
                codes, scale = quantize_fp8_blocks(arr)
                out.append((name,) + encode_tensor(codes, "F8_E4M3"))
                out.append((name + "_scale_inv",) + encode_tensor(scale, "F32"))
            else:
                out.append((name,) + encode_tensor(arr, "BF16"))
        else:
            out.append((name,) + encode_tensor(arr, storage))

    add("model.embed_tokens.weight", rng.standard_normal((V, D)), "embed")
    for i in range(cfg["num_hidden_layers"]):
        _layer_tensors(cfg, rng, i, _is_moe(cfg, i), add)
    add("model.norm.weight", 1.0 + 0.1 * rng.standard_normal(D), "norm")
    head = rng.standard_normal((V, D)) * (1.1 / math.sqrt(D))
    head[cfg["eos_token_id"]] *= 0.25       # keep greedy runs from ending on EOS too often
    add("lm_head.weight", head, "head")
    for j in range(cfg.get("num_nextn_predict_layers", 0) or 0):
        # MTP module as in DeepSeek-V3 checkpoints: a full decoder layer plus its own norms and
        # projection, stored as layer index num_hidden_layers + j. Must be ignored by loaders.
        li = cfg["num_hidden_layers"] + j
        p = "model.layers.%d." % li
        add(p + "enorm.weight", 1.0 + 0.1 * rng.standard_normal(D), "norm")
        add(p + "hnorm.weight", 1.0 + 0.1 * rng.standard_normal(D), "norm")
        add(p + "eh_proj.weight", rng.standard_normal((D, 2 * D)) / math.sqrt(2 * D), "linear")
        add(p + "embed_tokens.weight", rng.standard_normal((V, D)), "embed")
        add(p + "shared_head.norm.weight", 1.0 + 0.1 * rng.standard_normal(D), "norm")
        add(p + "shared_head.head.weight", rng.standard_normal((V, D)) / math.sqrt(D), "head")
        _layer_tensors(cfg, rng, li, True, add)
    return out


def hf_config(cfg):
    return {k: v for k, v in cfg.items() if k not in _PRIVATE}


def write_checkpoint(name, out_dir):
    cfg = CONFIGS[name]
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if f.endswith(".safetensors") or f.endswith(".json"):
            os.remove(os.path.join(out_dir, f))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f, indent=2)
    tensors = build_tensors(cfg)
    shards = cfg.get("shards", 1)
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    else:
        parts = [[] for _ in range(shards)]
        for k, t in enumerate(tensors):
            parts[k % shards].append(t)
        weight_map, total = {}, 0
        for s, part in enumerate(parts):
            fname = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            total += write_safetensors(os.path.join(out_dir, fname), part)
            for t in part:
                weight_map[t[0]] = fname
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return out_dir


def fingerprint(name):
    """A stable id of a config's generator settings (lets callers skip regeneration)."""
    with open(__file__, "rb") as f:
        blob = json.dumps(CONFIGS[name], sort_keys=True).encode() + f.read()
    return "%08x" % (zlib.crc32(blob) & 0xFFFFFFFF)


def ensure_checkpoint(name, out_dir):
    """Writes the checkpoint unless out_dir already holds this exact version."""
    stamp = os.path.join(out_dir, ".generator")
    fp = fingerprint(name)
    if os.path.exists(stamp):
        with open(stamp) as f:
            if f.read().strip() == fp:
                return out_dir
    write_checkpoint(name, out_dir)
    with open(stamp, "w") as f:
        f.write(fp + "\n")
    return out_dir


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS))
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.all:
        for n in CONFIGS:
            print(write_checkpoint(n, os.path.join(args.out, n)))
    elif args.config:
        print(write_checkpoint(args.config, args.out))
    else:
        ap.error("--config or --all")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

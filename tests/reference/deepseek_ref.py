#!/usr/bin/python3
"""Independent numpy reference of the DeepSeek-V2/V3 forward pass.

Written from the published architecture (Hugging Face `modeling_deepseek.py` semantics) plus the
project decisions listed below; it shares no code with the C++ engine.  Everything is computed in
float64 on the exactly-decoded checkpoint weights.

Project decisions that differ from (or pin down) the HF code:
  * noaux_tc routing: experts of dropped groups are masked to -inf (never chosen), even when the
    kept experts' biased choice scores are negative (HF fills them with 0.0).
  * Routed weights: if num_experts_per_tok > 1 and norm_topk_prob, weights /= sum + 1e-20; then the
    weights are ALWAYS multiplied by routed_scaling_factor (V3 semantics, also for V2 configs).
  * q_lora_rank null or 0 means "no q LoRA" (plain q_proj).
  * Checkpoint tensors of layers >= num_hidden_layers (MTP) are ignored.

Two independent formulations are provided so the reference can check itself:
  * Model.forward(ids): full recomputation over the whole sequence (naive MLA: keys/values are
    decompressed per head, RoPE in HF's de-interleaved rotate_half form, vectorised routing).
  * Model.decode_incremental(ids): token-by-token with a compressed-latent cache (absorbed MLA:
    q_nope is folded into kv_b_proj, attention runs over the latent), RoPE in the interleaved
    complex-pair form, and a per-token loop implementation of the routing.
"""

import json
import math
import os
import struct
import sys

import numpy as np

# ----------------------------------------------------------------------------------------------
# safetensors reading
# ----------------------------------------------------------------------------------------------


def _e4m3fn_table():
    """float64 values of the 256 OCP FP8 E4M3FN codes (bias 7, subnormals, S.1111.111 = NaN)."""
    t = np.zeros(256, dtype=np.float64)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exp = (code >> 3) & 0xF
        man = code & 0x7
        if exp == 0xF and man == 0x7:
            t[code] = np.nan
        elif exp == 0:
            t[code] = sign * man * 2.0 ** -9          # (man/8) * 2^(1-7)
        else:
            t[code] = sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)
    return t


E4M3FN_TABLE = _e4m3fn_table()


def decode_raw(dtype, shape, raw):
    """Decodes the raw little-endian bytes of one tensor into a float64 (or int) numpy array."""
    shape = tuple(int(s) for s in shape)
    if dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    elif dtype == "F64":
        a = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    elif dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2").astype(np.float64)
    elif dtype == "BF16":
        u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        a = (u16 << np.uint32(16)).view(np.float32).astype(np.float64)
    elif dtype == "F8_E4M3":
        a = E4M3FN_TABLE[np.frombuffer(raw, dtype=np.uint8)]
    elif dtype in ("I64", "I32", "I16", "I8", "U8"):
        a = np.frombuffer(raw, dtype={"I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
                                      "U8": "u1"}[dtype]).astype(np.int64)
    else:
        raise ValueError("unsupported safetensors dtype %r" % dtype)
    n = 1
    for s in shape:
        n *= s
    if a.size != n:
        raise ValueError("tensor byte size does not match shape %r (%s)" % (shape, dtype))
    return a.reshape(shape)


class SafetensorsFile:
    """One .safetensors file: 8-byte LE header length, JSON header, then the raw data block."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            blob = f.read()
        if len(blob) < 8:
            raise ValueError("%s: too short" % path)
        (hlen,) = struct.unpack("<Q", blob[:8])
        if 8 + hlen > len(blob):
            raise ValueError("%s: header length past end of file" % path)
        header = json.loads(blob[8:8 + hlen].decode("utf-8"))
        self.metadata = header.pop("__metadata__", None)
        self.entries = header
        self._data = memoryview(blob)[8 + hlen:]

    def names(self):
        return list(self.entries.keys())

    def dtype(self, name):
        return self.entries[name]["dtype"]

    def shape(self, name):
        return tuple(self.entries[name]["shape"])

    def get(self, name):
        e = self.entries[name]
        begin, end = e["data_offsets"]
        if not (0 <= begin <= end <= len(self._data)):
            raise ValueError("%s: tensor %s out of bounds" % (self.path, name))
        return decode_raw(e["dtype"], e["shape"], bytes(self._data[begin:end]))


class Checkpoint:
    """A HF checkpoint directory: single model.safetensors, or sharded via the index json."""

    def __init__(self, directory):
        self.directory = directory
        with open(os.path.join(directory, "config.json")) as f:
            self.config = json.load(f)
        index_path = os.path.join(directory, "model.safetensors.index.json")
        self.files = {}
        self.where = {}
        if os.path.exists(index_path):
            with open(index_path) as f:
                index = json.load(f)
            for name, fname in index["weight_map"].items():
                self.where[name] = fname
        else:
            fnames = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
            if not fnames:
                raise FileNotFoundError("no .safetensors in %s" % directory)
            for fname in fnames:
                for name in self._file(fname).names():
                    self.where[name] = fname
        q = self.config.get("quantization_config") or {}
        self.block = tuple(q.get("weight_block_size", [128, 128]))

    def _file(self, fname):
        if fname not in self.files:
            self.files[fname] = SafetensorsFile(os.path.join(self.directory, fname))
        return self.files[fname]

    def has(self, name):
        return name in self.where

    def raw(self, name):
        return self._file(self.where[name]).get(name)

    def dtype(self, name):
        return self._file(self.where[name]).dtype(name)

    def weight(self, name):
        """float64 tensor; FP8 weights are dequantized with their `_scale_inv` block scales."""
        w = self.raw(name)
        if self.dtype(name) == "F8_E4M3":
            sname = name + "_scale_inv"
            if not name.endswith(".weight") or not self.has(sname):
                raise ValueError("FP8 tensor %s without %s" % (name, sname))
            w = dequant_blocks(w, self.raw(sname), self.block)
        return w


def dequant_blocks(w, scale_inv, block=(128, 128)):
    """w[r, c] * scale_inv[r // br, c // bc] (edge blocks may be partial)."""
    rows, cols = w.shape
    br, bc = block
    need = (-(-rows // br), -(-cols // bc))
    if tuple(scale_inv.shape) != need:
        raise ValueError("scale_inv shape %r, want %r" % (scale_inv.shape, need))
    s = np.repeat(np.repeat(scale_inv, br, axis=0), bc, axis=1)[:rows, :cols]
    return w * s


# ----------------------------------------------------------------------------------------------
# configuration helpers
# ----------------------------------------------------------------------------------------------


def yarn_get_mscale(scale=1.0, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_find_correction_dim(num_rotations, dim, base, max_pos):
    return (dim * math.log(max_pos / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_find_correction_range(low_rot, high_rot, dim, base, max_pos):
    low = math.floor(yarn_find_correction_dim(low_rot, dim, base, max_pos))
    high = math.ceil(yarn_find_correction_dim(high_rot, dim, base, max_pos))
    return max(low, 0), min(high, dim - 1)


def yarn_linear_ramp_mask(lo, hi, n):
    if lo == hi:
        hi += 0.001
    return np.clip((np.arange(n, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


class Rope:
    """inv_freq and the cos/sin scale (`_mscale`) of HF DeepSeek's rotary embeddings."""

    def __init__(self, cfg):
        d = int(cfg["qk_rope_head_dim"])
        base = float(cfg.get("rope_theta", 10000.0))
        rs = cfg.get("rope_scaling")
        self.dim = d
        expo = np.arange(0, d, 2, dtype=np.float64) / d
        self.mscale = 1.0
        if rs is None:
            self.inv_freq = 1.0 / base ** expo
            return
        kind = rs.get("type", rs.get("rope_type"))
        if kind != "yarn":
            raise ValueError("unsupported rope_scaling type %r" % kind)
        factor = float(rs["factor"])
        freq_extra = 1.0 / base ** expo
        freq_inter = 1.0 / (factor * base ** expo)
        lo, hi = yarn_find_correction_range(float(rs.get("beta_fast", 32)),
                                            float(rs.get("beta_slow", 1)), d, base,
                                            float(rs.get("original_max_position_embeddings", 4096)))
        mask = 1.0 - yarn_linear_ramp_mask(lo, hi, d // 2)
        self.inv_freq = freq_inter * (1.0 - mask) + freq_extra * mask
        self.mscale = (yarn_get_mscale(factor, float(rs.get("mscale", 1)))
                       / yarn_get_mscale(factor, float(rs.get("mscale_all_dim", 0))))
        self.low, self.high = lo, hi

    def cos_sin(self, positions):
        """HF layout: emb = cat(freqs, freqs); returns (cos, sin) * mscale, shape [T, d]."""
        freqs = np.outer(np.asarray(positions, dtype=np.float64), self.inv_freq)
        emb = np.concatenate([freqs, freqs], axis=-1)
        return np.cos(emb) * self.mscale, np.sin(emb) * self.mscale


def softmax_scale(cfg):
    qhd = int(cfg["qk_nope_head_dim"]) + int(cfg["qk_rope_head_dim"])
    s = qhd ** -0.5
    rs = cfg.get("rope_scaling")
    if rs is not None:
        m_all = float(rs.get("mscale_all_dim", 0) or 0)
        if m_all:
            m = yarn_get_mscale(float(rs["factor"]), m_all)
            s = s * m * m
    return s


def is_moe_layer(cfg, i):
    return (int(cfg.get("n_routed_experts") or 0) > 0
            and i >= int(cfg.get("first_k_dense_replace", 0))
            and i % int(cfg.get("moe_layer_freq", 1)) == 0)


def has_q_lora(cfg):
    r = cfg.get("q_lora_rank")
    return r is not None and int(r) > 0


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def swiglu(x, p):
    return (silu(x @ p["gate"].T) * (x @ p["up"].T)) @ p["down"].T


def rope_hf(x, cos, sin):
    """HF DeepSeek apply_rotary_pos_emb on the last dim: de-interleave, then rotate_half.

    x [..., T, d] (or [T, H, d] with cos [T, 1, d]); the output is in the de-interleaved layout."""
    d = x.shape[-1]
    x = x.reshape(x.shape[:-1] + (d // 2, 2)).swapaxes(-1, -2).reshape(x.shape)
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    rot = np.concatenate([-x2, x1], axis=-1)
    return x * cos + rot * sin


def route_vectorized(scores, cfg, bias):
    """Top-k expert ids [T, k] and weights [T, k] for scores [T, E] (post softmax/sigmoid)."""
    T, E = scores.shape
    k = int(cfg["num_experts_per_tok"])
    method = cfg.get("topk_method", "greedy")
    if method == "greedy":
        choice = scores
    elif method in ("group_limited_greedy", "noaux_tc"):
        g = int(cfg["n_group"])
        kg = int(cfg["topk_group"])
        if method == "noaux_tc":
            choice = scores + bias[None, :]
            grouped = np.sort(choice.reshape(T, g, E // g), axis=-1)
            gscore = grouped[..., -1] + grouped[..., -2]
        else:
            choice = scores
            gscore = scores.reshape(T, g, E // g).max(axis=-1)
        keep = np.argsort(-gscore, axis=-1, kind="stable")[:, :kg]
        gmask = np.zeros((T, g), dtype=bool)
        np.put_along_axis(gmask, keep, True, axis=-1)
        emask = np.repeat(gmask, E // g, axis=-1)
        choice = np.where(emask, choice, -np.inf)
    else:
        raise ValueError("unsupported topk_method %r" % method)
    idx = np.argsort(-choice, axis=-1, kind="stable")[:, :k]
    w = np.take_along_axis(scores, idx, axis=-1)
    if k > 1 and cfg.get("norm_topk_prob", False):
        w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
    w = w * float(cfg.get("routed_scaling_factor", 1.0))
    return idx, w


def routing_gap(scores, cfg, bias):
    """Per token, how far the routing decision is from a tie ([T] floats, ~gate-logit units).

    The smallest gap between the last kept and the first dropped candidate, over the group
    selection (grouped methods) and the expert top-k within the kept groups. Softmax scores are
    compared in log space (= logit differences); sigmoid choice scores are divided by 0.25, the
    largest slope of the sigmoid. Used only to explain reduced-precision divergences."""
    T, E = scores.shape
    k = int(cfg["num_experts_per_tok"])
    method = cfg.get("topk_method", "greedy")
    sig = cfg.get("scoring_func", "softmax") == "sigmoid"
    if method == "noaux_tc":
        v = scores + bias[None, :]
    else:
        v = scores
    v = v / 0.25 if sig or method == "noaux_tc" else np.log(np.maximum(v, 1e-300))
    gap = np.full(T, np.inf)
    allowed = np.ones((T, E), dtype=bool)
    if method in ("group_limited_greedy", "noaux_tc"):
        g, kg = int(cfg["n_group"]), int(cfg["topk_group"])
        grouped = np.sort(v.reshape(T, g, E // g), axis=-1)
        gs = grouped[..., -1] + grouped[..., -2] if method == "noaux_tc" else grouped[..., -1]
        order = np.argsort(-gs, axis=-1, kind="stable")
        if kg < g:
            srt = np.take_along_axis(gs, order, axis=-1)
            gap = np.minimum(gap, srt[:, kg - 1] - srt[:, kg])
        gmask = np.zeros((T, g), dtype=bool)
        np.put_along_axis(gmask, order[:, :kg], True, axis=-1)
        allowed = np.repeat(gmask, E // g, axis=-1)
    vv = np.sort(np.where(allowed, v, -np.inf), axis=-1)[:, ::-1]
    if k < int(allowed[0].sum()):
        gap = np.minimum(gap, vv[:, k - 1] - vv[:, k])
    return gap


def route_one_token(scores, cfg, bias):
    """Loop formulation of the same routing for one token (used by the self-check path)."""
    E = len(scores)
    k = int(cfg["num_experts_per_tok"])
    method = cfg.get("topk_method", "greedy")
    allowed = list(range(E))
    choice = [float(s) for s in scores]
    if method != "greedy":
        g = int(cfg["n_group"])
        per = E // g
        if method == "noaux_tc":
            choice = [float(scores[e]) + float(bias[e]) for e in range(E)]
        groups = []
        for gi in range(g):
            members = sorted((choice[e] for e in range(gi * per, (gi + 1) * per)), reverse=True)
            gs = members[0] + members[1] if method == "noaux_tc" else members[0]
            groups.append((-gs, gi))
        kept = [gi for _, gi in sorted(groups)[:int(cfg["topk_group"])]]
        allowed = [e for e in range(E) if e // per in kept]
    chosen = [e for _, e in sorted((-choice[e], e) for e in allowed)[:k]]
    w = [float(scores[e]) for e in chosen]
    if k > 1 and cfg.get("norm_topk_prob", False):
        tot = sum(w) + 1e-20
        w = [x / tot for x in w]
    rsf = float(cfg.get("routed_scaling_factor", 1.0))
    return chosen, [x * rsf for x in w]


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------


def round_to_bf16(a):
    """Round to the nearest bfloat16 (ties to even), returned as float64."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


class Model:
    """weights="exact": the checkpoint's values (FP8 dequantized exactly), all math in float64.
    weights="bf16": every 2-D weight matrix (embedding, linears, lm_head; FP8 after
    dequantization) rounded to bfloat16 first; the MoE router (mlp.gate.weight) stays as stored,
    since Hugging Face computes the gate in float32; 1-D tensors (norms, correction bias) as stored.
    That is the model a bf16-compute run actually holds, so the remaining difference is
    arithmetic, not weight quantization.
    cache="bf16": what attention reads of every token (its normalised latent and its rotated
    rope key, the two parts of a latent-cache row) is rounded to bfloat16, as a bf16 KV cache
    stores it; queries and everything else keep full precision."""

    def __init__(self, directory, weights="exact", cache="f32"):
        if weights not in ("exact", "bf16"):
            raise ValueError("weights must be 'exact' or 'bf16'")
        if cache not in ("f32", "bf16"):
            raise ValueError("cache must be 'f32' or 'bf16'")
        self.weights = weights
        self.cache_round = round_to_bf16 if cache == "bf16" else (lambda a: a)
        self.ckpt = Checkpoint(directory)
        cfg = self.cfg = self.ckpt.config
        self.L = int(cfg["num_hidden_layers"])
        self.H = int(cfg["num_attention_heads"])
        self.nope = int(cfg["qk_nope_head_dim"])
        self.rdim = int(cfg["qk_rope_head_dim"])
        self.vdim = int(cfg["v_head_dim"])
        self.kvl = int(cfg["kv_lora_rank"])
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.rope = Rope(cfg)
        self.scale = softmax_scale(cfg)
        self.rounded = 0          # how many weight matrices bf16 rounding changed

        def W(name):
            w = self.ckpt.weight(name)
            if weights == "bf16" and w.ndim == 2 and not name.endswith("mlp.gate.weight"):
                r = round_to_bf16(w)
                if not np.array_equal(r, w):
                    self.rounded += 1
                return r
            return w
        self.embed = W("model.embed_tokens.weight")
        self.final_norm = W("model.norm.weight")
        if cfg.get("tie_word_embeddings", False):
            self.lm_head = self.embed
        else:
            self.lm_head = W("lm_head.weight")
        self.layers = []
        for i in range(self.L):
            p = "model.layers.%d." % i
            lay = {"in_norm": W(p + "input_layernorm.weight"),
                   "post_norm": W(p + "post_attention_layernorm.weight")}
            a = p + "self_attn."
            if has_q_lora(cfg):
                lay["q_a"] = W(a + "q_a_proj.weight")
                lay["q_a_norm"] = W(a + "q_a_layernorm.weight")
                lay["q_b"] = W(a + "q_b_proj.weight")
            else:
                lay["q"] = W(a + "q_proj.weight")
            lay["kv_a"] = W(a + "kv_a_proj_with_mqa.weight")
            lay["kv_a_norm"] = W(a + "kv_a_layernorm.weight")
            lay["kv_b"] = W(a + "kv_b_proj.weight")
            lay["o"] = W(a + "o_proj.weight")
            m = p + "mlp."
            if is_moe_layer(cfg, i):
                lay["moe"] = True
                lay["gate"] = W(m + "gate.weight")
                lay["bias"] = (W(m + "gate.e_score_correction_bias")
                               if cfg.get("topk_method") == "noaux_tc" else None)
                lay["experts"] = [
                    {n: W(m + "experts.%d.%s_proj.weight" % (e, n)) for n in ("gate", "up", "down")}
                    for e in range(int(cfg["n_routed_experts"]))]
                if int(cfg.get("n_shared_experts") or 0) > 0:
                    lay["shared"] = {n: W(m + "shared_experts.%s_proj.weight" % n)
                                     for n in ("gate", "up", "down")}
            else:
                lay["moe"] = False
                lay["mlp"] = {n: W(m + "%s_proj.weight" % n) for n in ("gate", "up", "down")}
            self.layers.append(lay)
        self.route_log = None

    # -- shared pieces --------------------------------------------------------------------------

    def _q(self, lay, x):
        if "q_a" in lay:
            return rms_norm(x @ lay["q_a"].T, lay["q_a_norm"], self.eps) @ lay["q_b"].T
        return x @ lay["q"].T

    def _gate_scores(self, lay, x):
        logits = x @ lay["gate"].T
        if self.cfg.get("scoring_func", "softmax") == "sigmoid":
            return sigmoid(logits)
        if self.cfg.get("scoring_func", "softmax") == "softmax":
            return softmax(logits, axis=-1)
        raise ValueError("unsupported scoring_func %r" % self.cfg.get("scoring_func"))

    # -- full recomputation ---------------------------------------------------------------------

    def attention(self, lay, x):
        T = x.shape[0]
        H, nope, r, vd, kvl = self.H, self.nope, self.rdim, self.vdim, self.kvl
        q = self._q(lay, x).reshape(T, H, nope + r)
        q_nope, q_pe = q[..., :nope], q[..., nope:]
        kv_a = x @ lay["kv_a"].T
        c, k_pe = kv_a[:, :kvl], kv_a[:, kvl:]
        c = self.cache_round(rms_norm(c, lay["kv_a_norm"], self.eps))
        kv = (c @ lay["kv_b"].T).reshape(T, H, nope + vd)
        k_nope, v = kv[..., :nope], kv[..., nope:]
        cos, sin = self.rope.cos_sin(np.arange(T))
        q_pe = rope_hf(q_pe, cos[:, None, :], sin[:, None, :])        # [T, H, r]
        k_pe = self.cache_round(rope_hf(k_pe, cos, sin))              # [T, r]
        s = (np.einsum("ihd,jhd->hij", q_nope, k_nope)
             + np.einsum("ihd,jd->hij", q_pe, k_pe)) * self.scale
        s = np.where(np.tril(np.ones((T, T), dtype=bool))[None], s, -np.inf)
        p = softmax(s, axis=-1)
        out = np.einsum("hij,jhd->ihd", p, v).reshape(T, H * vd)
        return out @ lay["o"].T

    def moe(self, lay, x):
        scores = self._gate_scores(lay, x)
        idx, w = route_vectorized(scores, self.cfg, lay["bias"])
        if self.route_log is not None:
            self.route_log.append({"scores": scores, "idx": idx,
                                   "gap": routing_gap(scores, self.cfg, lay["bias"])})
        out = np.zeros_like(x)
        for e, ex in enumerate(lay["experts"]):
            rows, slot = np.nonzero(idx == e)
            if rows.size:
                out[rows] += w[rows, slot][:, None] * swiglu(x[rows], ex)
        if "shared" in lay:
            out += swiglu(x, lay["shared"])
        return out

    def forward(self, ids):
        """Logits [T, vocab] for every position of the token sequence (full recomputation)."""
        ids = np.asarray(ids, dtype=np.int64)
        h = self.embed[ids]
        for lay in self.layers:
            h = h + self.attention(lay, rms_norm(h, lay["in_norm"], self.eps))
            y = rms_norm(h, lay["post_norm"], self.eps)
            h = h + (self.moe(lay, y) if lay["moe"] else swiglu(y, lay["mlp"]))
        return rms_norm(h, self.final_norm, self.eps) @ self.lm_head.T

    def generate(self, prompt, n_new, eos=None):
        """Greedy (argmax, lowest id on ties) by full recomputation.

        Returns (tokens, step_logits[n_new, vocab]); stops after eos when `eos` is given."""
        seq = list(prompt)
        toks, steps = [], []
        for _ in range(n_new):
            logits = self.forward(seq)[-1]
            t = int(np.argmax(logits))
            toks.append(t)
            steps.append(logits)
            seq.append(t)
            if eos is not None and t == eos:
                break
        return toks, np.array(steps)

    # -- independent incremental path (absorbed MLA, interleaved RoPE, loop routing) -------------

    def decode_incremental(self, ids):
        """Logits [T, vocab], computed one token at a time with a compressed-latent cache."""
        H, nope, r, vd, kvl = self.H, self.nope, self.rdim, self.vdim, self.kvl
        cache = [{"c": [], "kpe": []} for _ in self.layers]
        absorbed = []
        for lay in self.layers:
            wkv = lay["kv_b"].reshape(H, nope + vd, kvl)
            absorbed.append((wkv[:, :nope, :], wkv[:, nope:, :]))   # W_uk [H,nope,kvl], W_uv
        out_logits = []
        for pos, tok in enumerate(ids):
            h = self.embed[int(tok)].copy()
            for li, lay in enumerate(self.layers):
                x = rms_norm(h, lay["in_norm"], self.eps)
                q = self._q(lay, x).reshape(H, nope + r)
                kv_a = lay["kv_a"] @ x
                cache[li]["c"].append(
                    self.cache_round(rms_norm(kv_a[:kvl], lay["kv_a_norm"], self.eps)))
                cache[li]["kpe"].append(self.cache_round(self._rope_pairs(kv_a[kvl:], pos)))
                C = np.array(cache[li]["c"])          # [t, kvl]
                KPE = np.array(cache[li]["kpe"])      # [t, r]
                w_uk, w_uv = absorbed[li]
                att = np.zeros(H * vd)
                for hh in range(H):
                    q_lat = q[hh, :nope] @ w_uk[hh]                 # [kvl]
                    q_pe = self._rope_pairs(q[hh, nope:], pos)
                    sc = (C @ q_lat + KPE @ q_pe) * self.scale
                    pr = np.exp(sc - sc.max())
                    pr /= pr.sum()
                    att[hh * vd:(hh + 1) * vd] = w_uv[hh] @ (pr @ C)
                h = h + lay["o"] @ att
                y = rms_norm(h, lay["post_norm"], self.eps)
                if lay["moe"]:
                    scores = self._gate_scores(lay, y[None, :])[0]
                    chosen, weights = route_one_token(scores, self.cfg, lay["bias"])
                    m = np.zeros_like(y)
                    for e, wt in zip(chosen, weights):
                        ex = lay["experts"][e]
                        m += wt * (ex["down"] @ (silu(ex["gate"] @ y) * (ex["up"] @ y)))
                    if "shared" in lay:
                        sh = lay["shared"]
                        m += sh["down"] @ (silu(sh["gate"] @ y) * (sh["up"] @ y))
                else:
                    mp = lay["mlp"]
                    m = mp["down"] @ (silu(mp["gate"] @ y) * (mp["up"] @ y))
                h = h + m
            out_logits.append(self.lm_head @ rms_norm(h, self.final_norm, self.eps))
        return np.array(out_logits)

    def _rope_pairs(self, x, pos):
        """Rotation of consecutive pairs (x[2i], x[2i+1]) by pos*inv_freq[i], scaled by mscale.

        Mathematically the same map as rope_hf up to a fixed permutation of the output dims,
        which leaves all q.k dot products unchanged."""
        ang = pos * self.rope.inv_freq
        c, s = np.cos(ang), np.sin(ang)
        a, b = x[0::2], x[1::2]
        out = np.empty_like(x)
        out[0::2] = a * c - b * s
        out[1::2] = a * s + b * c
        return out * self.rope.mscale


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="numpy DeepSeek-V2/V3 reference")
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    args = ap.parse_args(argv)
    m = Model(args.model)
    prompt = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
    toks, steps = m.generate(prompt, args.max_new_tokens)
    last = m.forward(prompt)[-1]
    print(json.dumps({"tokens": toks, "logits": [float(v) for v in last]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""Pure-Python self-tests of the reference: safetensors reader/writer, FP8/BF16 codecs, block
dequantization, shards, RoPE/YaRN helpers, routing, internal consistency of the model, and that
every config actually exercises the decisions it is meant to cover (changing the semantics of any
of them moves the logits far beyond the parity tolerance).

    /usr/bin/python3 tests/reference/test_selfcheck.py [-v]
"""

import json
import math
import os
import shutil
import struct
import sys
import tempfile
import unittest

try:
    import numpy as np
except ImportError:  # pragma: no cover
    print("SKIP: numpy is not available to %s" % sys.executable)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_ref as ref  # noqa: E402
import make_checkpoint as mk  # noqa: E402

_TMP = None


def setUpModule():
    global _TMP
    _TMP = tempfile.mkdtemp(prefix="moeserve_ref_selftest_")


def tearDownModule():
    shutil.rmtree(_TMP, ignore_errors=True)


def ckpt(name):
    return mk.ensure_checkpoint(name, os.path.join(_TMP, name))


class CodecTest(unittest.TestCase):
    def test_e4m3_known_codes(self):
        t = ref.E4M3FN_TABLE
        self.assertEqual(t[0x38], 1.0)
        self.assertEqual(t[0x7E], 448.0)
        self.assertEqual(t[0x01], 2.0 ** -9)
        self.assertEqual(t[0x08], 2.0 ** -6)
        self.assertEqual(t[0x07], 7 * 2.0 ** -9)
        self.assertEqual(t[0x0F], 1.875 * 2.0 ** -6)
        self.assertEqual(t[0x40], 2.0)
        self.assertEqual(t[0xB8], -1.0)
        self.assertEqual(t[0xFE], -448.0)
        self.assertEqual(t[0x00], 0.0)
        self.assertEqual(t[0x80], 0.0)
        self.assertTrue(math.copysign(1.0, t[0x80]) < 0)
        self.assertTrue(math.isnan(t[0x7F]) and math.isnan(t[0xFF]))
        self.assertEqual(int(np.isnan(t).sum()), 2)
        # no infinities in e4m3fn; 0x78..0x7e are 256..448
        self.assertTrue(np.all(np.isfinite(t[~np.isnan(t)])))
        self.assertEqual(t[0x78], 256.0)

    def test_e4m3_encoder_roundtrip_and_rounding(self):
        codes = np.array([c for c in range(256) if c not in (0x7F, 0xFF, 0x80)], dtype=np.uint8)
        back = mk.to_e4m3_codes(ref.E4M3FN_TABLE[codes])
        np.testing.assert_array_equal(back, codes)
        # ties to even: 1.0625 is between 1.0 (0x38) and 1.125 (0x39) -> 0x38;
        # 1.1875 between 1.125 (0x39) and 1.25 (0x3a) -> 0x3a
        self.assertEqual(int(mk.to_e4m3_codes(np.array([1.0625]))[0]), 0x38)
        self.assertEqual(int(mk.to_e4m3_codes(np.array([1.1875]))[0]), 0x3A)
        self.assertEqual(int(mk.to_e4m3_codes(np.array([1.07]))[0]), 0x39)
        self.assertEqual(int(mk.to_e4m3_codes(np.array([1000.0]))[0]), 0x7E)     # saturates
        self.assertEqual(int(mk.to_e4m3_codes(np.array([-2.0 ** -10]))[0]), 0x00)  # tie -> 0
        self.assertEqual(int(mk.to_e4m3_codes(np.array([-3 * 2.0 ** -10]))[0]), 0x82)

    def test_bf16(self):
        raw = struct.pack("<4H", 0x3F80, 0xC000, 0x0000, 0x3E20)
        v = ref.decode_raw("BF16", [4], raw)
        np.testing.assert_array_equal(v, [1.0, -2.0, 0.0, 0.15625])
        x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -9, -3.5])
        np.testing.assert_array_equal(mk.to_bf16_bits(x),
                                      [0x3F80, 0x3F80, 0x3F82, 0x3F80, 0xC060])
        np.testing.assert_array_equal(ref.round_to_bf16(x), [1.0, 1.0, 1.0 + 2 ** -6, 1.0, -3.5])


class SafetensorsTest(unittest.TestCase):
    def test_roundtrip_all_dtypes(self):
        rng = np.random.default_rng(0)
        a32 = rng.standard_normal((3, 5))
        a16 = rng.standard_normal((7,))
        abf = rng.standard_normal((2, 3, 4))
        codes = rng.integers(0, 256, (4, 6)).astype(np.uint8)
        codes[codes == 0x7F] = 0x7E
        codes[codes == 0xFF] = 0xFE
        path = os.path.join(_TMP, "rt.safetensors")
        tensors = [("a.f32",) + mk.encode_tensor(a32, "F32"),
                   ("b.f16",) + mk.encode_tensor(a16, "F16"),
                   ("c.bf16",) + mk.encode_tensor(abf, "BF16"),
                   ("d.fp8",) + mk.encode_tensor(codes, "F8_E4M3"),
                   ("e.empty",) + mk.encode_tensor(np.zeros((0, 3)), "F32")]
        mk.write_safetensors(path, tensors, metadata={"format": "pt", "note": "x"})
        with open(path, "rb") as fh:
            blob = fh.read()
        (hlen,) = struct.unpack("<Q", blob[:8])
        self.assertEqual((8 + hlen) % 8, 0)
        header = json.loads(blob[8:8 + hlen])
        self.assertEqual(header["__metadata__"]["note"], "x")
        f = ref.SafetensorsFile(path)
        self.assertEqual(sorted(f.names()), ["a.f32", "b.f16", "c.bf16", "d.fp8", "e.empty"])
        np.testing.assert_array_equal(f.get("a.f32"), a32.astype(np.float32))
        np.testing.assert_array_equal(f.get("b.f16"), a16.astype(np.float16))
        np.testing.assert_array_equal(f.get("c.bf16"), ref.round_to_bf16(abf))
        np.testing.assert_array_equal(f.get("d.fp8"), ref.E4M3FN_TABLE[codes])
        self.assertEqual(f.get("e.empty").shape, (0, 3))
        self.assertEqual(f.dtype("d.fp8"), "F8_E4M3")

    def test_block_dequant_partial_edges(self):
        rng = np.random.default_rng(1)
        for shape in [(160, 200), (48, 160), (300, 96), (128, 128), (1, 129)]:
            w = rng.standard_normal(shape) * rng.uniform(0.01, 3)
            codes, scale = mk.quantize_fp8_blocks(w)
            self.assertEqual(scale.shape, (-(-shape[0] // 128), -(-shape[1] // 128)))
            deq = ref.dequant_blocks(ref.E4M3FN_TABLE[codes], scale.astype(np.float64))
            expect = np.empty(shape)
            for r in range(shape[0]):
                for c in range(shape[1]):
                    expect[r, c] = ref.E4M3FN_TABLE[codes[r, c]] * float(scale[r // 128, c // 128])
            np.testing.assert_array_equal(deq, expect)
            # e4m3 has 3 mantissa bits: relative error <= 2^-4 for normal values
            big = np.abs(w) > 2.0 ** -6 * np.repeat(np.repeat(scale, 128, 0), 128, 1)[
                :shape[0], :shape[1]]
            self.assertLessEqual(float(np.max(np.abs(deq - w)[big] / np.abs(w)[big])), 2.0 ** -4)
        with self.assertRaises(ValueError):
            ref.dequant_blocks(np.zeros((160, 160)), np.ones((1, 2)))

    def test_sharded_equals_single_and_mtp_present(self):
        single = ref.Checkpoint(ckpt("fp8"))
        shard = ref.Checkpoint(ckpt("fp8sharded"))
        self.assertEqual(sorted(single.where), sorted(shard.where))
        self.assertEqual(len(set(shard.where.values())), 3)
        split = [n for n in shard.where if n.endswith("_scale_inv")
                 and shard.where[n] != shard.where[n[:-len("_scale_inv")]]]
        self.assertTrue(split, "no weight/scale pair split across shards")
        fp8_names = [n for n in single.where if single.dtype(n) == "F8_E4M3"]
        self.assertTrue(fp8_names)
        for n in single.where:
            if n.endswith("_scale_inv"):
                continue
            np.testing.assert_array_equal(single.weight(n), shard.weight(n))
        L = single.config["num_hidden_layers"]
        self.assertTrue(any(n.startswith("model.layers.%d." % L) for n in single.where))
        for n in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight"):
            self.assertEqual(single.dtype(n), "BF16")
        self.assertEqual(single.dtype("model.layers.1.mlp.gate.e_score_correction_bias"), "F32")
        # partial edge blocks: q_proj [4 * 48, 160] -> 2 x 2 blocks, both edges partial
        self.assertEqual(single.raw("model.layers.0.self_attn.q_proj.weight_scale_inv").shape,
                         (2, 2))


class HelperTest(unittest.TestCase):
    def test_yarn(self):
        self.assertEqual(ref.yarn_get_mscale(1.0, 5.0), 1.0)
        self.assertAlmostEqual(ref.yarn_get_mscale(40, 1.0), 0.1 * math.log(40) + 1, places=15)
        self.assertEqual(ref.yarn_find_correction_range(32, 1, 16, 10000, 4096), (2, 6))
        self.assertEqual(ref.yarn_find_correction_range(32, 1, 32, 10000, 1024), (2, 9))
        np.testing.assert_array_equal(ref.yarn_linear_ramp_mask(2, 2, 4), [0, 0, 0, 1])
        r = ref.Rope(mk.hf_config(mk.CONFIGS["v2"]))
        m = (0.1 * 0.707 * math.log(16) + 1) / (0.1 * 1.0 * math.log(16) + 1)
        self.assertAlmostEqual(r.mscale, m, places=15)
        base = 1.0 / 10000.0 ** (np.arange(0, 32, 2) / 32)
        # low/high = 2/9: dims <= 2 keep the original (high) frequencies, dims >= 9 are
        # interpolated by the factor, dims in between are blended
        np.testing.assert_allclose(r.inv_freq[:3], base[:3], rtol=1e-15)
        np.testing.assert_allclose(r.inv_freq[9:], base[9:] / 16, rtol=1e-15)
        self.assertTrue(np.all((r.inv_freq[3:9] < base[3:9]) & (r.inv_freq[3:9] > base[3:9] / 16)))
        s = ref.softmax_scale(mk.hf_config(mk.CONFIGS["v2"]))
        self.assertAlmostEqual(s, 48 ** -0.5 * (0.1 * math.log(16) + 1) ** 2, places=15)
        self.assertEqual(ref.softmax_scale(mk.hf_config(mk.CONFIGS["v2lite"])), 48 ** -0.5)

    def test_rope_forms_agree(self):
        rng = np.random.default_rng(2)
        for name in ("v3like", "v2", "v2lite"):
            cfg = mk.hf_config(mk.CONFIGS[name])
            m = ref.Model.__new__(ref.Model)
            m.rope = ref.Rope(cfg)
            d = m.rope.dim
            q, k = rng.standard_normal(d), rng.standard_normal(d)
            for pq, pk in ((0, 0), (5, 3), (100, 37)):
                cq, sq = m.rope.cos_sin([pq])
                ck, sk = m.rope.cos_sin([pk])
                a = float(ref.rope_hf(q[None], cq, sq)[0] @ ref.rope_hf(k[None], ck, sk)[0])
                b = float(m._rope_pairs(q, pq) @ m._rope_pairs(k, pk))
                self.assertAlmostEqual(a, b, places=12)
            # relative position property: only pq - pk matters
            c1, s1 = m.rope.cos_sin([10])
            c2, s2 = m.rope.cos_sin([4])
            c3, s3 = m.rope.cos_sin([106])
            c4, s4 = m.rope.cos_sin([100])
            self.assertAlmostEqual(float(ref.rope_hf(q[None], c1, s1)[0] @ ref.rope_hf(k[None], c2, s2)[0]),
                                   float(ref.rope_hf(q[None], c3, s3)[0] @ ref.rope_hf(k[None], c4, s4)[0]),
                                   places=10)

    def test_rope_hf_layout(self):
        # d=4: de-interleave [x0,x1,x2,x3] -> [x0,x2,x1,x3]; pairs (x0,x1) and (x2,x3) rotate
        x = np.array([[1.0, 2.0, 3.0, 4.0]])
        ang = np.array([0.3, 0.7])
        emb = np.concatenate([ang, ang])[None]
        out = ref.rope_hf(x, np.cos(emb), np.sin(emb))[0]
        c, s = np.cos(ang), np.sin(ang)
        np.testing.assert_allclose(out, [1 * c[0] - 2 * s[0], 3 * c[1] - 4 * s[1],
                                         2 * c[0] + 1 * s[0], 4 * c[1] + 3 * s[1]], rtol=1e-15)


class RoutingTest(unittest.TestCase):
    def cfg(self, **kw):
        base = {"num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "norm_topk_prob": True,
                "routed_scaling_factor": 2.0, "topk_method": "noaux_tc"}
        base.update(kw)
        return base

    def test_noaux_dropped_groups_are_never_chosen(self):
        scores = np.array([[0.9, 0.8, 0.1, 0.2]])
        bias = np.array([-1.0, -1.0, -2.0, -2.0])   # kept group 0 has negative choice scores
        idx, w = ref.route_vectorized(scores, self.cfg(), bias)
        self.assertEqual(sorted(idx[0].tolist()), [0, 1])
        np.testing.assert_allclose(w[0], np.array([0.9, 0.8]) / 1.7 * 2.0, rtol=1e-14)
        chosen, w2 = ref.route_one_token(scores[0], self.cfg(), bias)
        self.assertEqual(chosen, [0, 1])

    def test_noaux_group_score_is_top2_sum(self):
        # group 0: max 0.9 but top-2 sum 0.9+0.0; group 1: 0.6+0.6 -> group 1 wins
        scores = np.array([[0.9, 0.0, 0.6, 0.6]])
        idx, _ = ref.route_vectorized(scores, self.cfg(), np.zeros(4))
        self.assertEqual(sorted(idx[0].tolist()), [2, 3])
        idx, _ = ref.route_vectorized(scores, self.cfg(topk_method="group_limited_greedy"), None)
        self.assertEqual(sorted(idx[0].tolist()), [0, 1])           # group max: group 0 wins

    def test_weight_is_unbiased_score_and_scaling_always_applies(self):
        scores = np.array([[0.2, 0.3, 0.4, 0.1]])
        bias = np.array([0.5, 0.0, 0.0, 0.0])
        c = self.cfg(n_group=1, topk_group=1, norm_topk_prob=False, routed_scaling_factor=3.0)
        idx, w = ref.route_vectorized(scores, c, bias)
        self.assertEqual(idx[0].tolist(), [0, 2])
        np.testing.assert_allclose(w[0], [0.6, 1.2], rtol=1e-14)
        c = self.cfg(topk_method="greedy", norm_topk_prob=True, routed_scaling_factor=16.0)
        idx, w = ref.route_vectorized(scores, c, None)
        np.testing.assert_allclose(w[0], np.array([0.4, 0.3]) / 0.7 * 16, rtol=1e-14)
        c = self.cfg(topk_method="greedy", num_experts_per_tok=1, routed_scaling_factor=2.0)
        idx, w = ref.route_vectorized(scores, c, None)     # k == 1: no normalisation
        np.testing.assert_allclose(w[0], [0.8], rtol=1e-14)

    def test_loop_and_vectorized_agree(self):
        rng = np.random.default_rng(3)
        for name in mk.CONFIGS:
            cfg = mk.hf_config(mk.CONFIGS[name])
            E = cfg["n_routed_experts"]
            scores = ref.sigmoid(rng.standard_normal((64, E)) * 2)
            bias = rng.uniform(-1, 0.2, E)
            idx, w = ref.route_vectorized(scores, cfg, bias)
            for t in range(64):
                ch, ww = ref.route_one_token(scores[t], cfg, bias)
                self.assertEqual(sorted(ch), sorted(idx[t].tolist()))
                np.testing.assert_allclose(sorted(ww), sorted(w[t]), rtol=1e-13)


class ModelTest(unittest.TestCase):
    def test_full_incremental_and_prefix_consistency(self):
        rng = np.random.default_rng(4)
        for name in ("v2lite", "fp8"):
            m = ref.Model(ckpt(name))
            ids = rng.integers(0, m.cfg["vocab_size"], 24).tolist()
            full = m.forward(ids)
            self.assertEqual(full.shape, (24, m.cfg["vocab_size"]))
            np.testing.assert_allclose(m.decode_incremental(ids), full, rtol=0, atol=1e-10)
            np.testing.assert_allclose(m.forward(ids[:9])[-1], full[8], rtol=0, atol=1e-10)
            toks, steps = m.generate(ids[:5], 3)
            np.testing.assert_allclose(m.forward(ids[:5] + toks[:2])[4:], steps, atol=1e-10)
            self.assertEqual(toks, [int(np.argmax(s)) for s in steps])
            self.assertGreater(float(full.std()), 0.5)

    def test_configs_exercise_every_decision(self):
        """Each listed semantic change must move some config's logits by >> the f32 tolerance."""
        rng = np.random.default_rng(5)
        models = {n: ref.Model(ckpt(n)) for n in ("v3like", "v2lite", "v2", "fp8")}
        seqs = {n: rng.integers(0, m.cfg["vocab_size"], 40).tolist() for n, m in models.items()}
        base = {n: m.forward(seqs[n]) for n, m in models.items()}
        orig_route, orig_rope = ref.route_vectorized, ref.rope_hf

        def zero_fill_route(scores, cfg, bias):      # HF's masked_fill(0.0) instead of -inf
            if cfg.get("topk_method") != "noaux_tc":
                return orig_route(scores, cfg, bias)
            T, E = scores.shape
            g, kg, k = cfg["n_group"], cfg["topk_group"], cfg["num_experts_per_tok"]
            ch = scores + bias
            gs = np.sort(ch.reshape(T, g, -1), -1)
            gs = gs[..., -1] + gs[..., -2]
            keep = np.argsort(-gs, -1, kind="stable")[:, :kg]
            gm = np.zeros((T, g), bool)
            np.put_along_axis(gm, keep, True, -1)
            ch = np.where(np.repeat(gm, E // g, -1), ch, 0.0)
            idx = np.argsort(-ch, -1, kind="stable")[:, :k]
            w = np.take_along_axis(scores, idx, -1)
            w = w / (w.sum(-1, keepdims=True) + 1e-20)
            return idx, w * cfg["routed_scaling_factor"]

        def v2_scaling(scores, cfg, bias):            # scale only when not normalising
            idx, w = orig_route(scores, cfg, bias)
            if cfg.get("norm_topk_prob") and cfg["num_experts_per_tok"] > 1:
                w = w / cfg["routed_scaling_factor"]
            return idx, w

        def no_groups(scores, cfg, bias):
            c = dict(cfg, n_group=1, topk_group=1)
            return orig_route(scores, c, bias)

        def biased_weights(scores, cfg, bias):
            if cfg.get("topk_method") != "noaux_tc":
                return orig_route(scores, cfg, bias)
            idx, _ = orig_route(scores, cfg, bias)
            w = np.take_along_axis(scores + bias, idx, -1)
            w = w / (w.sum(-1, keepdims=True) + 1e-20)
            return idx, w * cfg["routed_scaling_factor"]

        def rope_no_deinterleave(x, cos, sin):
            d = x.shape[-1]
            return x * cos + np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1) * sin

        mutations = {
            "noaux: dropped groups 0.0 instead of -inf": ("route_vectorized", zero_fill_route,
                                                          ("v3like", "fp8")),
            "V2 rule: no scaling when normalised": ("route_vectorized", v2_scaling, ("v2",)),
            "grouped routing ignored": ("route_vectorized", no_groups, ("v3like", "v2", "fp8")),
            "weights from biased scores": ("route_vectorized", biased_weights, ("v3like", "fp8")),
            "RoPE without de-interleave": ("rope_hf", rope_no_deinterleave,
                                           ("v3like", "v2lite", "v2", "fp8")),
        }
        try:
            for what, (fn_name, fn, names) in mutations.items():
                setattr(ref, fn_name, fn)
                for n in names:
                    d = float(np.abs(models[n].forward(seqs[n]) - base[n]).max())
                    self.assertGreater(d, 1e-2, "%s: %s changes logits by only %.2g" % (n, what, d))
                setattr(ref, "route_vectorized", orig_route)
                setattr(ref, "rope_hf", orig_rope)
        finally:
            ref.route_vectorized, ref.rope_hf = orig_route, orig_rope

        # attribute-level mutations
        def mutated(n, change):
            m = ref.Model(ckpt(n))
            change(m)
            return float(np.abs(m.forward(seqs[n]) - base[n]).max())

        checks = {
            "YaRN cos/sin mscale ignored": (("v2",), lambda m: setattr(m.rope, "mscale", 1.0)),
            "softmax_scale without mscale^2": (("v3like", "v2", "fp8"), lambda m: setattr(
                m, "scale", (m.nope + m.rdim) ** -0.5)),
            "YaRN inv_freq not applied": (("v3like", "v2", "fp8"), lambda m: setattr(
                m.rope, "inv_freq", 1.0 / 10000.0 ** (np.arange(0, m.rdim, 2) / m.rdim))),
            "shared experts omitted": (("v3like", "v2lite", "v2"), lambda m: [
                lay.pop("shared", None) for lay in m.layers]),
            "q_a_layernorm weight ignored": (("v3like", "v2"), lambda m: [
                lay.__setitem__("q_a_norm", np.ones_like(lay["q_a_norm"])) for lay in m.layers]),
            "q_a_layernorm skipped": (("v3like", "v2"), lambda m: setattr(
                m, "_q", lambda lay, x: (x @ lay["q_a"].T) @ lay["q_b"].T)),
            "kv_a_layernorm weight ignored": (("v2lite", "fp8"), lambda m: [
                lay.__setitem__("kv_a_norm", np.ones_like(lay["kv_a_norm"]))
                for lay in m.layers]),
            "sigmoid/softmax swapped": (("v3like", "v2lite", "v2", "fp8"), lambda m: m.cfg.__setitem__(
                "scoring_func", "softmax" if m.cfg["scoring_func"] == "sigmoid" else "sigmoid")),
        }
        for what, (names, change) in checks.items():
            for n in names:
                d = mutated(n, change)
                self.assertGreater(d, 1e-2, "%s: %s changes logits by only %.2g" % (n, what, d))


if __name__ == "__main__":
    unittest.main()

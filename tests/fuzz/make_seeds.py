#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into tests/fuzz/corpus/<target>/ (committed).

Hand-made inputs: HTTP requests, API bodies, chat inputs and templates, tokenizer texts and ids,
small safetensors files, and protobuf requests for every RPC (encoded from text format with
`protoc --encode`). Each file of a target whose first byte selects the entry point starts with
that selector byte. Rerun after changing a proto or a seed; the output is deterministic.
"""
import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def http(method, path, body=b"", headers=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += list(headers)
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CHAT = '{"model":"tiny-r1","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'
CHAT_STREAM = ('{"model":"tiny-r1","messages":[{"role":"system","content":"be brief"},'
               '{"role":"user","content":"hi"}],"stream":true,'
               '"stream_options":{"include_usage":true},"n":2,"logprobs":true,"top_logprobs":2}')
CHAT_PREFIX = ('{"model":"tiny-r1","messages":[{"role":"user","content":"count"},'
               '{"role":"assistant","content":"1, 2,","prefix":true,"reasoning_content":"ok"}],'
               '"stop":["5"],"reasoning_effort":"low","seed":7,"temperature":0.5}')
COMPLETION = '{"model":"tiny-r1","prompt":"Once upon","max_tokens":4,"stop":"\\n","top_p":0.9}'
COMPLETION_IDS = '{"model":"tiny-r1","prompt":[0,100,200],"max_tokens":2,"ignore_eos":true}'
FIM = '{"model":"tiny-r1","prompt":"def f(","suffix":"return 1","max_completion_tokens":3}'


def http_seeds():
    t = "http_request_fuzzer"
    write(t, "health", http("GET", "/health"))
    write(t, "models", http("GET", "/v1/models", headers=["Connection: close"]))
    write(t, "prices", http("GET", "/v1/prices"))
    write(t, "chat", http("POST", "/v1/chat/completions", CHAT))
    write(t, "chat_stream", http("POST", "/v1/chat/completions", CHAT_STREAM,
                                 ["Authorization: Bearer sk-fuzz"]))
    write(t, "completion", http("POST", "/v1/completions?x=1", COMPLETION))
    write(t, "beta_fim", http("POST", "/beta/completions", FIM))
    write(t, "expect_continue", http("POST", "/v1/chat/completions", CHAT,
                                     ["Expect: 100-continue"]))
    body = CHAT.encode()
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/json\r\n\r\n" +
               b"%x\r\n" % 10 + body[:10] + b"\r\n" +
               b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n")
    write(t, "chunked", chunked)
    write(t, "pipelined", http("GET", "/health") + http("POST", "/v1/completions", COMPLETION_IDS))
    write(t, "static_etag", http("GET", "/", headers=['If-None-Match: "x"']))
    write(t, "head_static", http("HEAD", "/playground.js"))
    write(t, "wrong_method", http("DELETE", "/v1/models"))
    write(t, "model_retrieve", http("GET", "/v1/models/tiny-r1"))
    write(t, "tokenize_chat", http("POST", "/tokenize", CHAT))
    write(t, "tokenize_prompt", http("POST", "/tokenize",
                                     '{"prompt":"Hi <think>","return_token_strs":true}'))
    write(t, "detokenize", http("POST", "/detokenize", '{"tokens":[0,100,128798]}'))
    write(t, "not_found", http("GET", "/nope/../etc"))
    write(t, "http10", b"GET /health HTTP/1.0\r\n\r\n")
    write(t, "bad_json", http("POST", "/v1/chat/completions", '{"model":'))


def mapping_seeds():
    t = "request_mapping_fuzzer"
    chat, completion = b"\x00", b"\x01"
    for name, sel, body in [("chat", chat, CHAT), ("chat_stream", chat, CHAT_STREAM),
                            ("chat_prefix", chat, CHAT_PREFIX),
                            ("chat_parts", chat, '{"model":"tiny-r1","messages":[{"role":"user",'
                             '"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},'
                             '{"role":"assistant","content":null},{"role":"tool","content":"t"},'
                             '{"role":"developer","content":"d","name":"n"}],"user":"u",'
                             '"metadata":{"k":"v"},"store":false,"frequency_penalty":1.5,'
                             '"presence_penalty":-1,"top_k":3,"min_p":0.1,'
                             '"repetition_penalty":1.1}'),
                            ("completion", completion, COMPLETION),
                            ("completion_ids", completion, COMPLETION_IDS),
                            ("fim", completion, FIM),
                            ("completion_list", completion,
                             '{"model":"tiny-r1","prompt":["x"],"n":3,"seed":1,"max_tokens":1}'),
                            ("completion_echo", completion,
                             '{"model":"tiny-r1","prompt":[0,100,200],"echo":true,'
                             '"logprobs":1,"max_tokens":0}'),
                            ("completion_batch", completion,
                             '{"model":"tiny-r1","prompt":[[0,100],[0,200,300]],"n":2,'
                             '"echo":true,"logprobs":1}')]:
        write(t, name, sel + body.encode())


def chat_template_seeds():
    t = "chat_template_fuzzer"
    write(t, "messages", b"\x00" + json.dumps([
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>x</think>Hello"},
        {"role": "user", "content": "More"}]).encode())
    write(t, "object", b"\x00" + json.dumps({
        "messages": [{"role": "user", "content": "call f"},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                     {"role": "tool", "content": "42"}],
        "add_generation_prompt": False, "tools": []}).encode())
    write(t, "non_string_content", b"\x00" + json.dumps(
        [{"role": "user", "content": [1, {"a": None}]}, {"role": 5}]).encode())
    with open(os.path.join(ROOT, "engine", "chat", "deepseek_r1.jinja"), "rb") as f:
        write(t, "r1_template", b"\x01" + f.read())
    write(t, "loops", b"\x01" + b"{% for m in messages %}{{ loop.index }}:{{ m.role|upper }}"
          b"{% if not loop.last %}, {% endif %}{% endfor %}{{ messages|length }}"
          b"{{ tools|tojson }}{% set ns = namespace(x=0) %}{% for i in range(3) %}"
          b"{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}")
    write(t, "macros", b"\x01" + b"{% macro g(a, b=2) %}{{ a ~ b }}{% endmacro %}{{ g(1) }}"
          b"{{ 'x' * 3 }}{{ messages[1].content|trim|replace('<b>', '') }}{{ n is number }}"
          b"{%- if flag is false -%}f{%- elif nothing is none -%}n{%- else -%}e{%- endif -%}"
          b"{{ messages|selectattr('role', 'equalto', 'user')|list|length }}"
          b"{{ raise_exception('stop') if n > 5 }}")
    write(t, "strings", b"\x01" + b"{{ bos_token + 'a'.split('a')|join('-') }}"
          b"{{ messages[2].content.split('</think>')[-1].strip() }}{{ '%s'|format(n) }}"
          b"{{ {'k': [1, 2]}|dictsort }}{{ messages[0]['content'][1:3] }}")


def tokenizer_seeds():
    t = "tokenizer_fuzzer"
    texts = {
        "ascii": "Hello, world! 123 + 456 = 579.\n\tIndented  spaces",
        "cjk": "你好，世界！こんにちは 안녕하세요",
        "specials": "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\nok</think>"
                    "<｜end▁of▁sentence｜>",
        "emoji": "👍🏽 café naïve \u0085\ufeff\u200b end",
        "code": "def f(x):\n    return x ** 2  # comment\r\n",
    }
    for name, text in texts.items():
        write(t, name, b"\x00" + text.encode("utf-8"))
    write(t, "invalid_utf8", b"\x00abc\xff\xfe\xc3(\xed\xa0\x80\xf4\x90\x80\x80")
    write(t, "ids", b"\x01" + struct.pack("<8i", 0, 1, 100, 1000, 128798, 128799, 128805, 300))
    write(t, "ids_raw", b"\x03" + struct.pack("<4i", -1, 2**31 - 1, 128815, 5))


def safetensors(header, data=b""):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    t = "safetensors_fuzzer"
    write(t, "f32", safetensors({"a": {"dtype": "F32", "shape": [2, 2],
                                       "data_offsets": [0, 16]}}, bytes(range(16))))
    write(t, "mixed", safetensors({
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]},
        "s": {"dtype": "F8_E4M3", "shape": [2, 1], "data_offsets": [6, 8]},
        "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}}, bytes(8)))
    write(t, "overlap", safetensors({
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, bytes(6)))
    write(t, "short_data", safetensors({"a": {"dtype": "F32", "shape": [4],
                                              "data_offsets": [0, 16]}}, bytes(4)))
    write(t, "huge_header_len", struct.pack("<Q", 2**63) + b"{}")


def model_config_seeds():
    t = "model_config_fuzzer"
    small = {
        "model_type": "deepseek_v3", "vocab_size": 384, "hidden_size": 64,
        "intermediate_size": 96, "moe_intermediate_size": 32, "num_hidden_layers": 3,
        "num_attention_heads": 4, "q_lora_rank": 48, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 16,
        "num_experts_per_tok": 4, "n_shared_experts": 1, "n_group": 4, "topk_group": 2,
        "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": True,
        "routed_scaling_factor": 2.5, "first_k_dense_replace": 1, "moe_layer_freq": 1,
        "rms_norm_eps": 1e-6, "rope_theta": 10000, "max_position_embeddings": 512,
        "bos_token_id": 0, "eos_token_id": 1,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}
    write(t, "small", json.dumps(small))
    dense = dict(small, n_routed_experts=0, q_lora_rank=None, rope_scaling=None,
                 quantization_config={"quant_method": "fp8", "fmt": "e4m3",
                                      "weight_block_size": [128, 128],
                                      "activation_scheme": "dynamic"})
    write(t, "dense_fp8", json.dumps(dense))
    write(t, "bad_freq", json.dumps(dict(small, moe_layer_freq=0, n_group=0)))


def protoc_encode(proto, message, text):
    out = subprocess.run(
        ["protoc", f"--encode=moeserve.v1.{message}", f"-I{os.path.join(ROOT, 'proto')}",
         f"moeserve/v1/{proto}"], input=text.encode(), capture_output=True, check=True)
    return out.stdout


SPEC = ('request_id: "r1" prompt_ids: [0, 10, 20, 30, 40] max_new_tokens: 4 '
        'sampling { temperature: 0.7 top_k: 5 top_p: 0.9 seed: 3 logprobs: true top_logprobs: 2 }')


def grpc_seeds():
    seeds = {
        "inference_grpc_fuzzer": [
            ("generate_chat", 0, "inference.proto", "InferenceRequest",
             'model: "tiny-r1" chat { messages { role: "user" content: "hi" } } max_tokens: 4 '
             'reasoning_effort: "low" stop: "x"'),
            ("generate_prompt", 0, "inference.proto", "InferenceRequest",
             'model: "tiny-r1" prompt: "Once" sampling { temperature: 0 } max_tokens: 2'),
            ("generate_ids", 0, "inference.proto", "InferenceRequest",
             'model: "tiny-r1" prompt_ids { ids: [0, 5, 9] } ignore_eos: true '
             'sampling { logprobs: true top_logprobs: 3 }'),
            ("list_models", 1, "inference.proto", "ListModelsRequest", ""),
        ],
        "kvcache_grpc_fuzzer": [
            ("lookup", 0, "kvcache.proto", "LookupRequest",
             'block_hashes: "0123456789abcdef" block_hashes: "fedcba9876543210" take_lease: true'),
            ("publish", 1, "kvcache.proto", "PublishRequest",
             'blocks { hash: "0123456789abcdef" data: "latent rows" } '
             'blocks { hash: "fedcba9876543210" data: "more" }'),
            ("fetch", 2, "kvcache.proto", "FetchRequest",
             'block_hashes: "0123456789abcdef" block_hashes: "fedcba9876543210"'),
            ("release", 3, "kvcache.proto", "ReleaseLeaseRequest", "lease_id: 1"),
            ("stats", 4, "kvcache.proto", "StatsRequest", ""),
        ],
        "router_grpc_fuzzer": [
            ("generate", 0, "router.proto", "RouteRequest", f"spec {{ {SPEC} }}"),
            ("generate_resume", 0, "router.proto", "RouteRequest",
             'spec { request_id: "r2" prompt_ids: [1, 2, 3, 4, 5, 6, 7, 8, 9] '
             'generated_ids: [7, 8] max_new_tokens: 5 thinking_budget: 1 '
             'think_close_ids: [11, 12] }'),
            ("list_workers", 1, "router.proto", "ListWorkersRequest", ""),
        ],
        "worker_grpc_fuzzer": [
            ("prefill", 0, "worker.proto", "PrefillRequest", f"spec {{ {SPEC} }}"),
            ("decode", 1, "worker.proto", "DecodeRequest",
             'spec { request_id: "d" prompt_ids: [0, 3, 5] generated_ids: [9] '
             'max_new_tokens: 4 thinking_budget: 1 think_close_ids: [6, 7] sample_vocab: 300 '
             'sampling { temperature: 0 repetition_penalty: 1.2 stop_token_ids: [1] } }'),
            ("get_load", 2, "worker.proto", "GetLoadRequest", ""),
        ],
        "expert_shard_grpc_fuzzer": [
            ("exchange", 0, "expert_shard.proto", "ExchangeRequest",
             'step: 1 layer: 1 hidden_size: 64 batches { expert: 0 rows: 1 activations: "' +
             "\\000" * 256 + '" }'),
            ("exchange_empty", 0, "expert_shard.proto", "ExchangeRequest",
             "step: 2 layer: 2 hidden_size: 64"),
            ("info", 1, "expert_shard.proto", "ShardInfoRequest", ""),
        ],
    }
    for target, items in seeds.items():
        for name, selector, proto, message, text in items:
            write(target, name, bytes([selector]) + protoc_encode(proto, message, text))


def main():
    http_seeds()
    mapping_seeds()
    chat_template_seeds()
    tokenizer_seeds()
    safetensors_seeds()
    model_config_seeds()
    grpc_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())

// moeserve: the command-line tool (make a model, generate, tokenize, ...).
#include <iostream>
#include <string>
#include <vector>

#include "tools/moeserve/commands.h"

namespace {
constexpr char kUsage[] =
    "usage: moeserve <command> [flags]\n"
    "commands:\n"
    "  up        [--model DIR] [--port 8000] [--prefill N] [--decode N] [--shards N]\n"
    "            [--compute-dtype bf16|f32] [--price-table FILE] [--api-keys FILE]\n"
    "            [--placement SPEC] [--restart-delay-s S] [--stream-resume-grace-s SECONDS]\n"
    "            [--backend cuda[:N]|cpu[:N]]   (the workers' steps, shards' experts on a backend)\n"
    "            [--kv-cache-dtype auto|bf16|f32]   (auto: bf16 on a backend in bf16 compute)\n"
    "            [--kv-cache-mb N | --gpu-memory-utilization F]   (the workers' KV pools; on cuda\n"
    "            the default shares 0.9 of the device between the workers)\n"
    "            [--decode-graphs]   (the workers replay decode steps from graphs: CUDA graphs)\n"
    "            start a whole cluster on loopback (S: restart a process that dies after S s)\n"
    "  mkmodel   --out DIR [--preset tiny|small|v2-lite|v3] [--seed N] [--dtype bf16|fp8]\n"
    "  generate  --model DIR (--prompt-ids 0,5,17 | --prompt TEXT [--chat]) [--max-new-tokens N]\n"
    "            [--temperature T] [--seed N] [--compute-dtype bf16|f32] [--json] [--all-logits]\n"
    "            [--backend cuda[:N]|cpu[:N]]   (the steps on a backend; default the host engine)\n"
    "            [--kv-cache-dtype auto|bf16|f32]   (auto: bf16 on a backend in bf16 compute)\n"
    "            [--decode-graphs]   (with --backend: decode steps replayed from graphs)\n"
    "            [--prompt-logprobs N]   (with --json: each prompt token's logprob, N alternatives)\n"
    "  status    --router HOST:PORT            workers' load and KV pools (JSON)\n"
    "  chat      [--url http://127.0.0.1:8000/v1] [--model M] [--reasoning-effort "
    "low|medium|high]\n"
    "            [--system TEXT] [--max-tokens N] [--temperature T] [--api-key KEY] [--no-color]\n"
    "            an interactive chat with a running gateway\n"
    "  keys      hash [--key KEY] | add --file F --name N --tier T [--admin] [--key KEY]\n"
    "            API key entries (SHA-256 hashes) for the gateway's --api-keys file\n"
    "  tokenize  --model DIR (--text TEXT | --file F) [--json]\n"
    "  detokenize --model DIR --ids 1,2,3\n";
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "mkmodel") return moeserve::cli::RunMkmodel(args);
  if (cmd == "generate") return moeserve::cli::RunGenerate(args);
  if (cmd == "up") return moeserve::cli::RunUp(args);
  if (cmd == "status") return moeserve::cli::RunStatus(args);
  if (cmd == "chat") return moeserve::cli::RunChat(args);
  if (cmd == "keys") return moeserve::cli::RunKeys(args);
  if (cmd == "tokenize") return moeserve::cli::RunTokenize(args);
  if (cmd == "detokenize") return moeserve::cli::RunDetokenize(args);
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    std::cout << kUsage;
    return 0;
  }
  std::cerr << "unknown command '" << cmd << "'\n" << kUsage;
  return 2;
}

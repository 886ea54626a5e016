#!/usr/bin/env python3
"""LLM benchmark: our decoder (each configuration in its own process, so peak RSS is its own)
and llama.cpp on the same machine, same GGUF, same prompt, same thread count, in the same run,
for each generated-token count. Prints JSON with the ratios to llama.cpp.

    python scripts/bench_llm.py [--gen 64 256] [--repeats 3] [--wgpu-gen 16] [--skip-wgpu]

Configurations: the CPU decoder (default; AVX-512 VNNI kernels where the CPU has them), the
same kept to AVX2 (the instruction set the llama.cpp reference is built for: the
like-for-like ratio), every token through Burn (the path before the CPU decoder), prompts
through the 8-bit kernel, weights dequantized at load, and wgpu.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / '.cache/llm/SmolLM2-135M-Instruct.Q4_1.gguf'
PROMPT = ROOT / 'models/bench/summary_prompt.txt'
BIN = ROOT / 'target/release/fusion_bench_llm'


def run(cmd, env=None):
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        return {'error': (res.stderr or res.stdout).strip().splitlines()[-1:]}
    return json.loads(res.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--gen', type=int, nargs='+', default=[64, 256])
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--wgpu-gen', type=int, default=16, help='generated tokens on wgpu (lavapipe is slow)')
    ap.add_argument('--skip-wgpu', action='store_true')
    ap.add_argument('--threads', type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith('LD_')}
    # (name, backend, weights, extra flags); the first is the default.
    configs = [('cpu decoder', 'flex', 'quantized', []),
               ('cpu decoder, AVX2 kernels', 'flex', 'quantized', ['--avx2-only']),
               ('burn decode and f32 prompts (before)', 'flex', 'quantized', ['--burn-decode', '--prompt-f32']),
               ('cpu decoder, --prompt-f32 (Burn f32 prompts)', 'flex', 'quantized', ['--prompt-f32']),
               ('dequantized at load', 'flex', 'dequantized', [])]
    runs = []
    for gen in a.gen:
        ours = []
        for name, backend, weights, extra in configs:
            r = run([str(BIN), '--model', str(MODEL), '--backend', backend, '--weights', weights, *extra,
                     '--threads', str(a.threads), '--prompt-file', str(PROMPT), '--gen', str(gen), '--repeats',
                     str(a.repeats)], env)
            r.update({'config': name, 'backend': backend, 'weights': weights})
            ours.append(r)
        ref = run([sys.executable, str(ROOT / 'tests/llama_cpp_ref.py'), 'bench', str(MODEL), str(PROMPT), str(gen),
                   str(a.repeats)], dict(os.environ, LLAMA_KV='f32', LLAMA_THREADS=str(a.threads)))
        for r in ours:
            if 'error' not in r and 'error' not in ref:
                r['vs_llama_cpp'] = {
                    'generated_tokens_per_s': round(r['generated_tokens_per_s'] / ref['generated_tokens_per_s'], 3),
                    'prompt_tokens_per_s': round(r['prompt_tokens_per_s'] / ref['prompt_tokens_per_s'], 3),
                    'first_token_latency': round(r['first_token_ms'] / ref['first_token_ms'], 3),
                }
            r.pop('runs', None)
        ref.pop('runs', None)
        runs.append({'generated_tokens': gen, 'ours': ours, 'llama_cpp': ref})
    wgpu = None
    if not a.skip_wgpu:
        wgpu = run([str(BIN), '--model', str(MODEL), '--backend', 'wgpu', '--weights', 'dequantized', '--prompt-file',
                    str(PROMPT), '--gen', str(a.wgpu_gen), '--repeats', '1'], env)
        wgpu.pop('runs', None)
    print(json.dumps({'model': MODEL.name, 'prompt_file': str(PROMPT.relative_to(ROOT)), 'cpus': os.cpu_count(),
                      'threads': a.threads, 'runs': runs, 'wgpu': wgpu}, indent=2))

if __name__ == '__main__':
    main()

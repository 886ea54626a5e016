#!/usr/bin/env python3
"""LLM benchmark: our decoder (each configuration in its own process, so peak RSS is its own)
and llama.cpp on the same machine, same GGUF, same prompt, in the same run. Prints JSON with
the ratios to llama.cpp.

    python scripts/bench_llm.py [--gen 64] [--repeats 3] [--wgpu-gen 16] [--skip-wgpu]
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
    ap.add_argument('--gen', type=int, default=64)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--wgpu-gen', type=int, default=16, help='generated tokens on wgpu (lavapipe is slow)')
    ap.add_argument('--skip-wgpu', action='store_true')
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith('LD_')}
    # (backend, weights, extra flags, generated tokens, repeats); the first is the default.
    configs = [('flex', 'quantized', [], a.gen, a.repeats), ('flex', 'quantized', ['--prompt-int8'], a.gen, a.repeats),
               ('flex', 'dequantized', [], a.gen, a.repeats)]
    if not a.skip_wgpu:
        configs.append(('wgpu', 'dequantized', [], a.wgpu_gen, 1))
    ours = []
    for backend, weights, extra, gen, repeats in configs:
        r = run([str(BIN), '--model', str(MODEL), '--backend', backend, '--weights', weights, *extra,
                 '--prompt-file', str(PROMPT), '--gen', str(gen), '--repeats', str(repeats)], env)
        r.update({'backend': backend, 'weights': weights})
        ours.append(r)
    ref = run([sys.executable, str(ROOT / 'tests/llama_cpp_ref.py'), 'bench', str(MODEL), str(PROMPT), str(a.gen),
               str(a.repeats)], dict(os.environ, LLAMA_KV='f32', LLAMA_THREADS=str(os.cpu_count() or 2)))
    for r in ours:
        if 'error' not in r and 'error' not in ref:
            r['vs_llama_cpp'] = {
                'generated_tokens_per_s': round(r['generated_tokens_per_s'] / ref['generated_tokens_per_s'], 3),
                'prompt_tokens_per_s': round(r['prompt_tokens_per_s'] / ref['prompt_tokens_per_s'], 3),
                'first_token_latency': round(r['first_token_ms'] / ref['first_token_ms'], 3),
            }
        r.pop('runs', None)
    ref.pop('runs', None)
    print(json.dumps({'model': MODEL.name, 'prompt_file': str(PROMPT.relative_to(ROOT)), 'cpus': os.cpu_count(),
                      'ours': ours, 'llama_cpp': ref}, indent=2))


if __name__ == '__main__':
    main()

"""llama.cpp (llama-cpp-python) as the reference peer for the summarizer's model.

    python tests/llama_cpp_ref.py tokenize MODEL TEXTS.json      -> {"ids": [[...], ...]}
    python tests/llama_cpp_ref.py logits MODEL PROMPTS.json [N]  -> {"logits": [[...], ...]}
      (the last N tokens of each prompt evaluated one at a time, as when decoding)
    python tests/llama_cpp_ref.py generate MODEL PROMPTS.json N  -> {"results": [{"tokens": [...]}]}
    python tests/llama_cpp_ref.py bench MODEL PROMPT.txt N       -> timings, JSON

Prompts are fed as raw text with special tokens parsed (the chat template is in the text),
no BOS added (SmolLM2's GGUF says add_bos_token = false), greedy = argmax of the logits.
"""
import json
import os
import resource
import sys
import time

import numpy as np
from llama_cpp import Llama

THREADS = int(os.environ.get("LLAMA_THREADS", "2"))
# KV cache type: llama.cpp's default is f16; "f32" keeps keys/values in f32 like our decoder.
KV_TYPES = {"f16": 1, "f32": 0}
KV = os.environ.get("LLAMA_KV", "f16")


def load(model, n_ctx=2048):
    return Llama(model_path=model, n_ctx=n_ctx, n_threads=THREADS, n_threads_batch=THREADS,
                 n_batch=512, verbose=False, flash_attn=False,
                 type_k=KV_TYPES[KV], type_v=KV_TYPES[KV])


def tokenize(llm, text):
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def last_logits(llm):
    """Logits of the last evaluated token (llama-cpp-python keeps `scores` only with
    logits_all, which would make every prompt token compute its logits)."""
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def greedy(llm, prompt_ids, n):
    llm.reset()
    llm.eval(prompt_ids)
    out = []
    for _ in range(n):
        tok = int(np.argmax(last_logits(llm)))
        if tok == llm.token_eos():
            break
        out.append(tok)
        llm.eval([tok])
    return out


def main():
    cmd, model = sys.argv[1], sys.argv[2]
    if cmd == "tokenize":
        texts = json.load(open(sys.argv[3], encoding="utf-8"))
        llm = Llama(model_path=model, vocab_only=True, verbose=False)
        print(json.dumps({"ids": [tokenize(llm, t) for t in texts]}))
    elif cmd == "generate":
        prompts = json.load(open(sys.argv[3], encoding="utf-8"))
        n = int(sys.argv[4])
        llm = load(model)
        print(json.dumps({"results": [{"prompt": p, "tokens": greedy(llm, tokenize(llm, p), n)} for p in prompts]}))
    elif cmd == "logits":
        prompts = json.load(open(sys.argv[3], encoding="utf-8"))
        decode_last = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        llm = load(model)
        out = []
        for p in prompts:
            llm.reset()
            ids = tokenize(llm, p)
            split = max(1, len(ids) - decode_last)
            llm.eval(ids[:split])
            for t in ids[split:]:
                llm.eval([t])
            out.append([float(v) for v in last_logits(llm)])
        print(json.dumps({"logits": out}))
    elif cmd == "bench":
        prompt = open(sys.argv[3], encoding="utf-8").read()
        n_gen = int(sys.argv[4])
        repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 3
        t0 = time.perf_counter()
        llm = load(model)
        load_s = time.perf_counter() - t0
        ids = tokenize(llm, prompt)
        runs = []
        for _ in range(repeats):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            t_prompt = time.perf_counter() - t0
            tok = int(np.argmax(last_logits(llm)))
            first = time.perf_counter() - t0
            t1 = time.perf_counter()
            for _ in range(n_gen):
                llm.eval([tok])  # a fixed number of steps: no early stop at end of turn
                tok = int(np.argmax(last_logits(llm)))
            t_gen = time.perf_counter() - t1
            runs.append({"prompt_s": t_prompt, "first_token_s": first, "gen_s": t_gen})
        best = min(runs, key=lambda r: r["prompt_s"] + r["gen_s"])
        print(json.dumps({
            "engine": "llama.cpp (llama-cpp-python)",
            "threads": THREADS,
            "load_s": load_s,
            "prompt_tokens": len(ids),
            "generated_tokens": n_gen,
            "prompt_tokens_per_s": len(ids) / best["prompt_s"],
            "generated_tokens_per_s": n_gen / best["gen_s"],
            "first_token_ms": best["first_token_s"] * 1e3,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "runs": runs,
        }))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()

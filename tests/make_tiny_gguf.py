"""Writes a tiny random-weight Llama GGUF with the `gguf` package (llama.cpp's own writer):
SmolLM2's tokenizer, 2 layers of width 64, and every block format the loader handles —
F16 (embedding, q/k/v), Q4_0 (attention output), Q4_1 (gate), Q8_0 (up, untied output),
BF16 (down), F32 (norms). It is "another GGUF Llama model of this family", loaded by path.

    python tests/make_tiny_gguf.py SOURCE.gguf OUT.gguf [--blocks]

--blocks: every matrix in an integer block format instead (Q4_0 q and gate, Q4_1 k, attention
output and down, Q8_0 v, up, embedding and output), 3 layers of width 128, 4 heads of 32, 2
KV heads, rope base 500000: the shape the CPU decoder runs, but not SmolLM2's.
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFWriter
from gguf.quants import quantize


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def main():
    src, out = sys.argv[1], sys.argv[2]
    blocks = '--blocks' in sys.argv[3:]
    r = GGUFReader(src)
    rng = np.random.default_rng(7)
    d, ff, heads, kv, layers = (128, 256, 4, 2, 3) if blocks else (64, 128, 4, 2, 2)
    # Per matrix: (the default file's format, the --blocks file's).
    fmt = {'embd': (T.F16, T.Q8_0), 'output': (T.Q8_0, T.Q8_0), 'q': (T.F16, T.Q4_0), 'k': (T.F16, T.Q4_1),
           'v': (T.F16, T.Q8_0), 'o': (T.Q4_0, T.Q4_1), 'gate': (T.Q4_1, T.Q4_0), 'up': (T.Q8_0, T.Q8_0),
           'down': (T.BF16, T.Q4_1)}
    fmt = {k: v[1] if blocks else v[0] for k, v in fmt.items()}
    vocab = len(field(r, 'tokenizer.ggml.tokens'))
    w = GGUFWriter(out, 'llama')
    w.add_name('tiny-llama-blocks-test' if blocks else 'tiny-llama-test')
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(500000.0 if blocks else 10000.0)
    w.add_rope_dimension_count(d // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model(field(r, 'tokenizer.ggml.model'))
    w.add_tokenizer_pre(field(r, 'tokenizer.ggml.pre'))
    w.add_token_list(field(r, 'tokenizer.ggml.tokens'))
    w.add_token_types(field(r, 'tokenizer.ggml.token_type'))
    w.add_token_merges(field(r, 'tokenizer.ggml.merges'))
    w.add_bos_token_id(int(field(r, 'tokenizer.ggml.bos_token_id')))
    w.add_eos_token_id(int(field(r, 'tokenizer.ggml.eos_token_id')))
    w.add_add_bos_token(False)

    def tensor(name, shape, qtype, scale=0.2):
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        if qtype == T.F32:
            w.add_tensor(name, a)
        elif qtype == T.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            q = quantize(a, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)

    tensor('token_embd.weight', (vocab, d), fmt['embd'], 1.0)
    tensor('output_norm.weight', (d,), T.F32, 1.0)
    tensor('output.weight', (vocab, d), fmt['output'])
    hd = d // heads
    for i in range(layers):
        tensor(f'blk.{i}.attn_norm.weight', (d,), T.F32, 1.0)
        tensor(f'blk.{i}.attn_q.weight', (d, d), fmt['q'])
        tensor(f'blk.{i}.attn_k.weight', (kv * hd, d), fmt['k'])
        tensor(f'blk.{i}.attn_v.weight', (kv * hd, d), fmt['v'])
        tensor(f'blk.{i}.attn_output.weight', (d, d), fmt['o'])
        tensor(f'blk.{i}.ffn_norm.weight', (d,), T.F32, 1.0)
        tensor(f'blk.{i}.ffn_gate.weight', (ff, d), fmt['gate'])
        tensor(f'blk.{i}.ffn_up.weight', (ff, d), fmt['up'])
        tensor(f'blk.{i}.ffn_down.weight', (d, ff), fmt['down'])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == '__main__':
    main()

"""Writes a tiny random-weight Llama GGUF with the `gguf` package (llama.cpp's own writer):
SmolLM2's tokenizer, 2 layers of width 64, and every block format the loader handles —
F16 (embedding, q/k/v), Q4_0 (attention output), Q4_1 (gate), Q8_0 (up, untied output),
BF16 (down), F32 (norms). It is "another GGUF Llama model of this family", loaded by path.

    python tests/make_tiny_gguf.py SOURCE.gguf OUT.gguf
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
    r = GGUFReader(src)
    rng = np.random.default_rng(7)
    d, ff, heads, kv, layers = 64, 128, 4, 2, 2
    vocab = len(field(r, 'tokenizer.ggml.tokens'))
    w = GGUFWriter(out, 'llama')
    w.add_name('tiny-llama-test')
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
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

    tensor('token_embd.weight', (vocab, d), T.F16, 1.0)
    tensor('output_norm.weight', (d,), T.F32, 1.0)
    tensor('output.weight', (vocab, d), T.Q8_0)
    hd = d // heads
    for i in range(layers):
        tensor(f'blk.{i}.attn_norm.weight', (d,), T.F32, 1.0)
        tensor(f'blk.{i}.attn_q.weight', (d, d), T.F16)
        tensor(f'blk.{i}.attn_k.weight', (kv * hd, d), T.F16)
        tensor(f'blk.{i}.attn_v.weight', (kv * hd, d), T.F16)
        tensor(f'blk.{i}.attn_output.weight', (d, d), T.Q4_0)
        tensor(f'blk.{i}.ffn_norm.weight', (d,), T.F32, 1.0)
        tensor(f'blk.{i}.ffn_gate.weight', (ff, d), T.Q4_1)
        tensor(f'blk.{i}.ffn_up.weight', (ff, d), T.Q8_0)
        tensor(f'blk.{i}.ffn_down.weight', (d, ff), T.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == '__main__':
    main()

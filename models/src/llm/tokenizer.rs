//! The tokenizer, built from the GGUF's own `tokenizer.ggml.*` metadata with the `tokenizers`
//! crate: GPT-2 byte-level BPE (vocab + merges), the pre-tokenizer llama.cpp names in
//! `tokenizer.ggml.pre`, and every control token as a special token, so `<|im_start|>` in a
//! prompt is one id (llama.cpp's `tokenize(..., special=True)`).
use super::gguf::{GgufFile, Value};
use super::LlmError;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

/// ggml token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

pub struct LlmTokenizer {
    inner: Tokenizer,
    pub bos: Option<u32>,
    pub eos: u32,
    /// Ids that end a turn (eos, and `<|im_end|>`/`<|endoftext|>` where the vocab has them).
    pub stop_ids: Vec<u32>,
    pub vocab_size: usize,
}

impl LlmTokenizer {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, LlmError> {
        let bad = |reason: String| LlmError::Tokenizer(reason);
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer.ggml.model '{model}' is not supported (only GPT-2 byte-level BPE, 'gpt2')"
            )));
        }
        let pre = g.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
        let tokens: Vec<&str> = g
            .array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| bad("tokenizer.ggml.tokens holds a non-string".into())))
            .collect::<Result<_, _>>()?;
        let merges: Vec<(String, String)> = g
            .array("tokenizer.ggml.merges")?
            .iter()
            .map(|v| {
                let s = v.as_str().ok_or_else(|| bad("tokenizer.ggml.merges holds a non-string".into()))?;
                let (a, b) = s.split_once(' ').ok_or_else(|| bad(format!("merge '{s}' is not two tokens")))?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<_, LlmError>>()?;
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) => a.iter().map(|v| v.as_f64().map(|x| x as i64).unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| bad(format!("BPE from the GGUF vocab/merges: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            // llama.cpp splits every digit on its own before the GPT-2 regex for these.
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
                Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
            }
            "default" | "gpt-2" | "gpt2" => byte_level.into(),
            other => {
                return Err(bad(format!(
                    "pre-tokenizer '{other}' is not supported (smollm, starcoder, refact, command-r, codeshell, exaone, minerva-7b, gpt-2)"
                )))
            }
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .map(|(s, &t)| AddedToken::from(s.to_string(), t == TOKEN_TYPE_CONTROL))
            .collect();
        inner.add_special_tokens(special).map_err(|e| bad(format!("special tokens: {e}")))?;

        let id = |key: &str| g.get(key).and_then(Value::as_u64).map(|v| v as u32);
        let eos =
            id("tokenizer.ggml.eos_token_id").ok_or_else(|| bad("tokenizer.ggml.eos_token_id is missing".into()))?;
        let add_bos = g.get("tokenizer.ggml.add_bos_token").and_then(Value::as_bool).unwrap_or(false);
        let bos = if add_bos { id("tokenizer.ggml.bos_token_id") } else { None };
        let mut stop_ids = vec![eos];
        for name in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(i) = tokens.iter().position(|t| *t == name) {
                if types.get(i) == Some(&TOKEN_TYPE_CONTROL) && !stop_ids.contains(&(i as u32)) {
                    stop_ids.push(i as u32);
                }
            }
        }
        Ok(LlmTokenizer { inner, bos, eos, stop_ids, vocab_size: tokens.len() })
    }

    /// Token ids of `text`; special-token strings in it become their ids. No BOS is added
    /// here (`bos` says whether the model wants one).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.inner.decode(ids, true).map_err(|e| LlmError::Tokenizer(e.to_string()))
    }
}

/// One chat turn.
pub struct ChatMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

/// SmolLM2's chat template (ChatML): `<|im_start|>{role}\n{content}<|im_end|>\n` per message,
/// the model's default system prompt when the first message is not a system one, and the
/// assistant header as the generation prompt.
pub fn chat_prompt(messages: &[ChatMessage]) -> String {
    let mut s = String::new();
    if messages.first().is_none_or(|m| m.role != "system") {
        s.push_str(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
        );
    }
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(m.role);
        s.push('\n');
        s.push_str(m.content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

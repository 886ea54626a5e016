//! The summarizer's language model on the real SmolLM2-135M-Instruct GGUF (fetched by
//! `make setup` / scripts/fetch-weights.sh): parsing, hyper-parameters from the metadata,
//! tokenizer, decoding with the KV cache, and clear errors for broken files.
use models::llm::quant::GgmlType;
use models::llm::{
    ChatMessage, GenerateOptions, GgufFile, Llm, LlmError, LlmOptions, Sampling, StopReason, WeightMode,
};
use models::Backend;
use std::path::PathBuf;

fn model_path() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/llm/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run `make setup` (scripts/fetch-weights.sh)", p.display());
    p
}

/// Two logit vectors agree within the noise of 8-bit activations: a float summed in another
/// order can flip one activation's rounding, which moves single logits by up to ~1 here.
/// Measured (2026-12-06): Burn's own one-token and whole-prompt paths differ by 0.06σ on
/// average and 0.26σ at most; the CPU decoder and the Burn decode path, each with its own
/// cache over 24 decoded tokens, by up to 0.10σ and 0.25σ (differences compound through the
/// caches); each from llama.cpp by 0.03–0.08σ and ≤ 0.34σ. A wrong kernel, rotation or cache
/// layout moves them by whole σs.
fn within_quantization_noise(a: &[f32], b: &[f32]) -> Result<(), String> {
    let n = b.len() as f32;
    let mean = b.iter().sum::<f32>() / n;
    let sd = (b.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
    let diffs: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    let (max, avg) = (diffs.iter().copied().fold(0.0, f32::max), diffs.iter().sum::<f32>() / n);
    if avg < 0.15 * sd && max < 0.5 * sd {
        Ok(())
    } else {
        Err(format!("logits differ by {avg:.3} on average and {max:.3} at most (σ {sd:.3})"))
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("llm-tests");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn the_real_gguf_parses_with_its_tensor_table_and_metadata() {
    let g = GgufFile::open(&model_path()).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 272);
    let count = |t: GgmlType| g.tensors.iter().filter(|x| x.ggml_type == t).count();
    assert_eq!((count(GgmlType::Q4_1), count(GgmlType::F32), count(GgmlType::Q8_0)), (210, 61, 1));
    assert_eq!(g.str("general.architecture").unwrap(), "llama");
    assert_eq!(g.u64("llama.block_count").unwrap(), 30);
    assert_eq!(g.u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(g.u64("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(g.f64("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(g.array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(g.array("tokenizer.ggml.merges").unwrap().len(), 48900);
    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!((embd.dims.clone(), embd.ggml_type), (vec![576, 49152], GgmlType::Q8_0));
    let down = g.tensor("blk.29.ffn_down.weight").unwrap();
    assert_eq!((down.dims.clone(), down.ggml_type), (vec![1536, 576], GgmlType::Q4_1));
    assert_eq!(g.tensor("blk.0.attn_k.weight").unwrap().dims, vec![576, 192]);

    let c = models::llm::LlamaConfig::from_gguf(&g).unwrap();
    assert_eq!(
        (c.n_layers, c.d_model, c.d_ff, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, c.context_length),
        (30, 576, 1536, 9, 3, 64, 49152, 8192)
    );
    assert_eq!(c.rope_theta, 100000.0);
    assert!((c.rms_eps - 1e-5).abs() < 1e-10, "{}", c.rms_eps); // stored as f32
}

#[test]
fn broken_files_give_clear_errors() {
    let bytes = std::fs::read(model_path()).unwrap();
    // Truncated: the tensor table points past the end.
    let p = scratch("truncated.gguf");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = Llm::load(&p, &LlmOptions::default()).err().expect("truncated file refused").to_string();
    assert!(e.contains("past the end of the file") && e.contains("truncated"), "{e}");
    // Not a GGUF at all.
    let p = scratch("garbage.gguf");
    std::fs::write(&p, b"this is not a model").unwrap();
    let e = Llm::load(&p, &LlmOptions::default()).err().unwrap().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
    // One flipped bit inside the weights: only the hash can see it.
    let mut flipped = bytes.clone();
    let at = flipped.len() - 1000;
    flipped[at] ^= 0x10;
    let p = scratch("flipped.gguf");
    std::fs::write(&p, &flipped).unwrap();
    let expected = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    let e = Llm::load(&p, &LlmOptions { sha256: Some(expected.into()), ..LlmOptions::default() }).err().unwrap();
    assert!(matches!(e, LlmError::HashMismatch { .. }));
    assert!(e.to_string().contains(expected), "{e}");
    // Missing file.
    let e = Llm::load(&scratch("absent.gguf"), &LlmOptions::default()).err().unwrap().to_string();
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn answers_a_question_and_the_kv_cache_matches_a_full_recompute() {
    let llm = Llm::load(&model_path(), &LlmOptions::default()).unwrap();
    let opts = GenerateOptions { max_tokens: 24, sampling: Sampling::Greedy, deadline: None, reuse_prompt: false };
    let g = llm.chat(&[ChatMessage { role: "user", content: "What color is the sky on a clear day?" }], &opts).unwrap();
    assert!(g.text.to_lowercase().contains("blue"), "{}", g.text);
    assert_eq!(g.tokens.len(), g.margins.len());

    // Incremental decoding (KV cache) gives the same next-token logits as one pass over the
    // whole sequence.
    let prompt = llm.encode_prompt("The quick brown fox jumps over the lazy").unwrap();
    let mut cache = llm.model.new_cache();
    let _ = llm.model.forward(&prompt[..prompt.len() - 3], &mut cache, None).unwrap();
    let mut last = vec![];
    for t in &prompt[prompt.len() - 3..] {
        last = llm.model.forward(&[*t], &mut cache, None).unwrap();
    }
    let full = llm.model.forward(&prompt, &mut llm.model.new_cache(), None).unwrap();
    within_quantization_noise(&last, &full).unwrap();
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(argmax(&last), argmax(&full));
}

#[test]
fn sampling_is_seeded_and_the_deadline_stops_generation() {
    let llm = Llm::load(&model_path(), &LlmOptions::default()).unwrap();
    let ids = llm.encode_prompt("<|im_start|>user\nTell me about robots.<|im_end|>\n<|im_start|>assistant\n").unwrap();
    let run = |seed| {
        let s = Sampling::TopP { temperature: 0.9, top_p: 0.9, seed };
        llm.generate_ids(&ids, &GenerateOptions { max_tokens: 16, sampling: s, deadline: None, reuse_prompt: false })
            .unwrap()
            .tokens
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    let dl = std::time::Instant::now() + std::time::Duration::from_millis(1);
    let g = llm
        .generate_ids(
            &ids,
            &GenerateOptions { max_tokens: 64, sampling: Sampling::Greedy, deadline: Some(dl), reuse_prompt: false },
        )
        .unwrap();
    assert_eq!(g.stop, StopReason::Deadline);
}

#[test]
fn quantized_and_dequantized_weights_and_wgpu_agree() {
    let prompt = "<|im_start|>user\nWhat does an IMU measure?<|im_end|>\n<|im_start|>assistant\n";
    let logits = |backend, weights| {
        let llm =
            Llm::load(&model_path(), &LlmOptions { backend, weights: Some(weights), ..LlmOptions::default() }).unwrap();
        let ids = llm.encode_prompt(prompt).unwrap();
        llm.model.forward(&ids, &mut llm.model.new_cache(), None).unwrap()
    };
    let q = logits(Backend::Flex, WeightMode::Quantized);
    let d = logits(Backend::Flex, WeightMode::Dequantized);
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    let maxdiff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    // 8-bit activations (quantized path) against f32 ones: same choice, logits within noise.
    assert_eq!(argmax(&q), argmax(&d));
    assert!(maxdiff(&q, &d) < 2.0, "{}", maxdiff(&q, &d));
    // A prompt of ≥ 32 tokens goes through f32 products of per-layer dequantized weights with
    // prompt_f32, through the 8-bit path by default: same choice, logits within noise.
    let long = "<|im_start|>user\nA person entered the forward safety zone 3 m ahead of the robot while the radar \
                reported a closing speed of 1.8 m/s. Summarize this for the operator.<|im_end|>\n<|im_start|>assistant\n";
    let run = |prompt_f32| {
        let llm = Llm::load(&model_path(), &LlmOptions { prompt_f32, ..LlmOptions::default() }).unwrap();
        let ids = llm.encode_prompt(long).unwrap();
        assert!(ids.len() >= 32);
        llm.model.forward(&ids, &mut llm.model.new_cache(), None).unwrap()
    };
    let (f, i8) = (run(true), run(false));
    assert_eq!(argmax(&f), argmax(&i8));
    assert!(maxdiff(&f, &i8) < 2.0, "{}", maxdiff(&f, &i8));
    // The wgpu backend (lavapipe here; setup installs it) runs the same decoder.
    let w = logits(Backend::Wgpu, WeightMode::Dequantized);
    assert!(maxdiff(&w, &d) < 0.05, "wgpu vs flex dequantized: {}", maxdiff(&w, &d));
}

/// The prompt cache (`reuse_prompt`, what the summarizer uses): a prompt continued from the
/// previous generation's common prefix answers as one processed from its first token (the
/// same greedy tokens wherever the choice is not a near tie), a repeated prompt runs only its
/// last token, several prompts are kept, and a generation given up at its deadline leaves no
/// half-filled cache behind.
#[test]
fn the_prompt_cache_reuses_a_shared_prefix_and_answers_as_without_it() {
    use models::llm::chat_prompt;
    let llm = Llm::load(&model_path(), &LlmOptions::default()).unwrap();
    let system = "You are the safety monitor of an autonomous robot. Answer in one short sentence.";
    let ids = |user: &str| {
        let messages = [ChatMessage { role: "system", content: system }, ChatMessage { role: "user", content: user }];
        llm.encode_prompt(&chat_prompt(&messages)).unwrap()
    };
    let camera = ids("The camera image went black at 12.3 s for 0.8 s. Tell the operator.");
    let lidar = ids("The lidar stopped sending points at 4.1 s. Tell the operator.");
    let run = |prompt: &[u32], reuse_prompt: bool, deadline: Option<std::time::Instant>| {
        let opts = GenerateOptions { max_tokens: 20, sampling: Sampling::Greedy, deadline, reuse_prompt };
        llm.generate_ids(prompt, &opts).unwrap()
    };
    // Same tokens, or a first difference where the uncached run's choice was a near tie.
    let agree = |a: &models::llm::Generation, fresh: &models::llm::Generation| match a
        .tokens
        .iter()
        .zip(&fresh.tokens)
        .position(|(x, y)| x != y)
    {
        None => assert_eq!(a.tokens.len(), fresh.tokens.len(), "{:?} vs {:?}", a.text, fresh.text),
        Some(k) => assert!(fresh.margins[k] < 0.5, "diverged at token {k}: {:?} vs {:?}", a.text, fresh.text),
    };
    let (camera_fresh, lidar_fresh) = (run(&camera, false, None), run(&lidar, false, None));
    let first = run(&camera, true, None);
    assert_eq!(first.reused_prompt_tokens, 0, "runs without reuse_prompt leave no cache");
    assert_eq!(first.tokens, camera_fresh.tokens);
    let shared = camera.iter().zip(&lidar).take_while(|(a, b)| a == b).count();
    let second = run(&lidar, true, None);
    assert_eq!(second.reused_prompt_tokens, shared, "the system message and the chat template's head");
    agree(&second, &lidar_fresh);
    let again = run(&lidar, true, None);
    assert_eq!(again.reused_prompt_tokens, lidar.len() - 1);
    agree(&again, &lidar_fresh);
    // Several prompts are kept: the camera prompt is still there after two lidar ones.
    let camera_again = run(&camera, true, None);
    assert_eq!(camera_again.reused_prompt_tokens, camera.len() - 1);
    agree(&camera_again, &camera_fresh);
    // Given up in the prompt: nothing of it is kept (some layers would hold its keys, others
    // not), and the next answer starts again from the shared prefix.
    let impact = ids("The IMU measured an impact of 6.5 g at 30.0 s. Tell the operator.");
    let cut = run(&impact, true, Some(std::time::Instant::now() + std::time::Duration::from_millis(1)));
    assert_eq!(cut.stop, StopReason::Deadline);
    let after = run(&impact, true, None);
    assert_eq!(after.reused_prompt_tokens, impact.iter().zip(&camera).take_while(|(a, b)| a == b).count());
    agree(&after, &run(&impact, false, None));
}

/// The summarizer on the real model: a zone intrusion (the event the node test publishes)
/// gets a model-written summary that the claim verifier accepts, and whatever is published
/// for a burst — model or template — passes the verifier.
#[test]
fn the_model_summary_of_a_zone_intrusion_is_verified_and_published_text_is_faithful() {
    use models::llm::summary::{EventInfo, Summarizer, SummarizerConfig};
    use models::llm::verify::verify;
    let zone = EventInfo {
        event_id: 41,
        stamp_ns: 100_000_000_000,
        kind: "zone_intrusion".into(),
        severity: 1,
        rule: "track_inside_zone".into(),
        measured_value: 3.14,
        threshold: 0.0,
        sensors: vec!["lidar".into(), "radar".into(), "camera".into()],
        track_ids: vec![7],
        zone: "forward".into(),
        position: [3.1, 0.5, 0.9],
        onset_ns: 100_000_000_000,
        evidence: vec![("label".into(), "person".into()), ("distance_m".into(), "3.14".into())],
    };
    let dropout = EventInfo {
        event_id: 42,
        stamp_ns: 100_400_000_000,
        kind: "sensor_dropout".into(),
        rule: "stream_silent".into(),
        measured_value: 6.0,
        threshold: 5.0,
        sensors: vec!["lidar".into()],
        track_ids: vec![],
        zone: String::new(),
        position: [0.0; 3],
        evidence: vec![("silent_s".into(), "0.60".into())],
        ..zone.clone()
    };
    let config = SummarizerConfig { deadline: std::time::Duration::from_secs(60), ..SummarizerConfig::default() };
    let s = Summarizer::new(Llm::load(&model_path(), &LlmOptions::default()).map_err(|e| e.to_string()), config);
    let one = s.summarize(std::slice::from_ref(&zone));
    assert!(!one.fallback, "{} ({}): {}", one.fallback_reason, one.rejected_claim, one.rejected_text);
    assert_eq!(verify(&one.text, std::slice::from_ref(&zone)), Ok(()));
    let burst = [zone, dropout];
    let two = s.summarize(&burst);
    assert_eq!(verify(&two.text, &burst), Ok(()), "{two:?}");
    // Written one event at a time (the default), the burst is the model's: each sentence
    // verified against its own event, the whole against the burst.
    assert!(s.config.per_event);
    assert!(!two.fallback, "{} ({}): {}", two.fallback_reason, two.rejected_claim, two.rejected_text);
    assert!(two.text.starts_with("2 anomaly events. "), "{}", two.text);
}

/// The CPU decoder (one pass per token, no Burn; the default on flex) against every token
/// through Burn with the same 8-bit kernels: the same greedy tokens wherever the choice is not
/// a near tie, logits within float-summation noise, and a token given up at its deadline
/// leaves the cache as it was.
#[test]
fn the_cpu_decoder_agrees_with_burn_and_gives_up_a_token_cleanly() {
    let prompt = "<|im_start|>user\nThe LiDAR lost 6 frames in a row while the radar kept tracking a car 12 m ahead. \
                  What should the operator check?<|im_end|>\n<|im_start|>assistant\n";
    // Prompts through Burn's f32 path on both (the CPU decoder's own prompt path is tested
    // below): the last step is Burn's prompt reading the CPU decoder's cache.
    let load = |cpu_decode| {
        let opts = LlmOptions { cpu_decode, threads: Some(2), prompt_f32: true, ..LlmOptions::default() };
        Llm::load(&model_path(), &opts).unwrap()
    };
    let (cpu, burn) = (load(true), load(false));
    assert_eq!(cpu.model.cpu_decode_threads(), Some(2));
    assert_eq!(burn.model.cpu_decode_threads(), None);
    let ids = cpu.encode_prompt(prompt).unwrap();
    let (mut cc, mut bc) = (cpu.model.new_cache(), burn.model.new_cache());
    let mut lc = cpu.model.forward(&ids, &mut cc, None).unwrap();
    let mut lb = burn.model.forward(&ids, &mut bc, None).unwrap();
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
    for step in 0..24 {
        let tok = argmax(&lb);
        if argmax(&lc) != tok {
            let mut sorted = lb.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            assert!(sorted[0] - sorted[1] < 1.0, "step {step}: tokens differ away from a near tie");
            break;
        }
        if step == 5 {
            // A deadline already past: the token is refused, the cache is as it was, and
            // the same token then gives the same logits.
            let past = Some(std::time::Instant::now());
            let before = cc.len();
            assert!(matches!(cpu.model.forward(&[tok], &mut cc, past), Err(LlmError::Deadline)));
            assert_eq!(cc.len(), before);
        }
        lc = cpu.model.forward(&[tok], &mut cc, None).unwrap();
        lb = burn.model.forward(&[tok], &mut bc, None).unwrap();
        within_quantization_noise(&lc, &lb).map_err(|e| format!("step {step}: {e}")).unwrap();
    }
    assert_eq!(cc.len(), bc.len());
    // A prompt after decoded tokens (the Burn path reading the CPU decoder's cache).
    // ≥ 32 tokens: shorter prompts take the CPU decoder even with prompt_f32.
    let more = cpu
        .tokenizer
        .encode(
            " Check the LiDAR cable and its driver log, then compare the radar track with the camera frames \
             of the same second before you restart the node or call the operator.",
        )
        .unwrap();
    assert!(more.len() >= 32, "{}", more.len());
    let a = cpu.model.forward(&more, &mut cc, None).unwrap();
    let b = burn.model.forward(&more, &mut bc, None).unwrap();
    within_quantization_noise(&a, &b).unwrap();
}

#[test]
fn a_prompt_prefilled_by_the_cpu_decoder_equals_its_tokens_decoded_one_at_a_time() {
    // 8-bit prompts (llama.cpp's arithmetic) run through the CPU decoder a whole prompt per
    // pass; every token's arithmetic must be the one-token path's, bit for bit.
    let llm =
        Llm::load(&model_path(), &LlmOptions { prompt_f32: false, threads: Some(2), ..LlmOptions::default() }).unwrap();
    let ids = llm
        .encode_prompt(
            "<|im_start|>user\nThe radar lost a pedestrian 4.2 m ahead at 13:02:11 while the LiDAR kept it. \
             Why?<|im_end|>\n<|im_start|>assistant\n",
        )
        .unwrap();
    assert!(ids.len() > 30, "{}", ids.len());
    let (mut batched, mut one_by_one) = (llm.model.new_cache(), llm.model.new_cache());
    let a = llm.model.forward(&ids, &mut batched, None).unwrap();
    let mut b = vec![];
    for &t in &ids {
        b = llm.model.forward(&[t], &mut one_by_one, None).unwrap();
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b), "prefill logits differ from token-by-token decoding");
    assert_eq!(batched.len(), one_by_one.len());
    // The caches agree too: the next token reads every position of both.
    let next = [a.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0 as u32];
    let (a2, b2) = (
        llm.model.forward(&next, &mut batched, None).unwrap(),
        llm.model.forward(&next, &mut one_by_one, None).unwrap(),
    );
    assert_eq!(bits(&a2), bits(&b2), "the caches differ");
    // A prompt continued after decoded tokens (the prompt cache's case), and a deadline
    // already past: refused, the cache as it was.
    let more = llm.tokenizer.encode(" The pedestrian stepped behind a parked van.").unwrap();
    let before = batched.len();
    let past = Some(std::time::Instant::now());
    assert!(matches!(llm.model.forward(&more, &mut batched, past), Err(LlmError::Deadline)));
    assert_eq!(batched.len(), before);
    let a3 = llm.model.forward(&more, &mut batched, None).unwrap();
    let mut b3 = vec![];
    for &t in &more {
        b3 = llm.model.forward(&[t], &mut one_by_one, None).unwrap();
    }
    assert_eq!(bits(&a3), bits(&b3), "a prompt after decoded tokens differs");
}

#[test]
fn sequences_decoded_together_equal_each_decoded_alone() {
    // The summarizer writes a burst's sentences together: one pass over the weights for
    // every answer still running. Each sequence must get, bit for bit, the logits it gets
    // alone, whatever the others (prompts of other lengths, from other cache positions).
    let llm =
        Llm::load(&model_path(), &LlmOptions { prompt_f32: false, threads: Some(2), ..LlmOptions::default() }).unwrap();
    let chat = |user: &str| {
        let system = "You are the safety monitor of an autonomous robot. Answer in one short sentence.";
        let messages = [ChatMessage { role: "system", content: system }, ChatMessage { role: "user", content: user }];
        llm.encode_prompt(&models::llm::chat_prompt(&messages)).unwrap()
    };
    let prompts = [
        chat("The radar lost a pedestrian 4.2 m ahead at 13:02:11 while the LiDAR kept it. Why?"),
        chat("Reply with one word: is a camera a sensor?"),
        chat(
            "A vehicle closes at 7.5 m/s, 12.0 m ahead in the forward zone: time to collision 1.6 s. The road is wet, \
             the light is low, two pedestrians wait at the crossing on the left and a cyclist follows 20 m behind the \
             robot on the right-hand side of the lane. Tell the operator.",
        ),
    ];
    // One prompt longer than its share of a 256-token chunk (256 / 3): it runs in two
    // chunks beside the others.
    assert!(prompts.iter().any(|p| p.len() > 256 / 3), "{:?}", prompts.iter().map(Vec::len).collect::<Vec<_>>());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    // forward_batch: prompts of different lengths together, then a token each, against
    // each prompt and token alone.
    let mut together: Vec<_> = prompts.iter().map(|_| llm.model.new_cache()).collect();
    let mut seqs: Vec<(&[u32], &mut models::llm::KvCache)> =
        prompts.iter().map(|p| &p[..]).zip(together.iter_mut()).collect();
    let batch_logits = llm.model.forward_batch(&mut seqs, None).unwrap();
    let mut alone: Vec<_> = prompts.iter().map(|_| llm.model.new_cache()).collect();
    for ((p, cache), l) in prompts.iter().zip(alone.iter_mut()).zip(&batch_logits) {
        assert_eq!(bits(&llm.model.forward(p, cache, None).unwrap()), bits(l), "a prompt's logits differ in a batch");
    }
    let next = [11u32, 2000, 35];
    let mut seqs: Vec<(&[u32], &mut models::llm::KvCache)> =
        next.iter().map(std::slice::from_ref).zip(together.iter_mut()).collect();
    let batch_logits = llm.model.forward_batch(&mut seqs, None).unwrap();
    for ((t, cache), l) in next.iter().zip(alone.iter_mut()).zip(&batch_logits) {
        assert_eq!(
            bits(&llm.model.forward(&[*t], cache, None).unwrap()),
            bits(l),
            "a decoded token differs in a batch"
        );
    }
    // A deadline already past: refused, every cache as it was.
    let lens: Vec<usize> = together.iter().map(|c| c.len()).collect();
    let mut seqs: Vec<(&[u32], &mut models::llm::KvCache)> =
        next.iter().map(std::slice::from_ref).zip(together.iter_mut()).collect();
    assert!(matches!(llm.model.forward_batch(&mut seqs, Some(std::time::Instant::now())), Err(LlmError::Deadline)));
    assert_eq!(together.iter().map(|c| c.len()).collect::<Vec<_>>(), lens);

    // generate_batch: greedy and seeded answers, each stopping on its own, equal to each
    // prompt answered alone (tokens and margins), with and without the prompt cache.
    use models::llm::BatchPrompt;
    let samplings = [
        Sampling::Greedy,
        Sampling::TopP { temperature: 0.7, top_p: 0.9, seed: 5 },
        Sampling::TopP { temperature: 0.7, top_p: 0.9, seed: 6 },
    ];
    for reuse_prompt in [false, true] {
        let opts = GenerateOptions { max_tokens: 32, sampling: Sampling::Greedy, deadline: None, reuse_prompt };
        let batch: Vec<BatchPrompt> = prompts
            .iter()
            .zip(samplings)
            .map(|(p, sampling)| BatchPrompt { prompt: p, sampling, shared_prefix: 0 })
            .collect();
        let answers = llm.generate_batch(&batch, &opts).unwrap();
        for (b, a) in batch.iter().zip(&answers) {
            let single = llm.generate_ids(b.prompt, &GenerateOptions { sampling: b.sampling, ..opts.clone() }).unwrap();
            assert_eq!(a.tokens, single.tokens, "{:?} vs {:?}", a.text, single.text);
            assert_eq!(bits(&a.margins), bits(&single.margins));
            assert_eq!(a.stop, single.stop);
        }
        let stops: Vec<_> = answers.iter().map(|a| (a.stop, a.tokens.len())).collect();
        assert!(stops.iter().any(|s| s.0 == StopReason::EndOfTurn), "answers of their own lengths: {stops:?}");
        assert!(stops.iter().any(|s| s.0 == StopReason::MaxTokens), "answers of their own lengths: {stops:?}");
    }
}

#[test]
fn a_shared_prefix_outlives_whole_answers_in_the_prompt_cache() {
    // The summarizer keeps each kind's system message and worked example as a cache entry
    // of its own: a burst of long answers must not push it out (it did, and every event
    // of the next burst ran its example again).
    use models::llm::{chat_prompt, BatchPrompt, PROMPT_CACHE_POSITIONS};
    let llm = Llm::load(&model_path(), &LlmOptions::default()).unwrap();
    let system = "You are the safety monitor of an autonomous robot. Answer in one short sentence.";
    let chat = |system: &str, user: Option<&str>| {
        let mut m = vec![ChatMessage { role: "system", content: system }];
        m.extend(user.map(|content| ChatMessage { role: "user", content }));
        llm.encode_prompt(&chat_prompt(&m)).unwrap()
    };
    let first = chat(system, Some("Camera blackout at 12.3 s for 0.8 s."));
    let shared = first.iter().zip(&chat(system, None)).take_while(|(a, b)| a == b).count();
    let opts = GenerateOptions { max_tokens: 2, sampling: Sampling::Greedy, deadline: None, reuse_prompt: true };
    let run = |prompt: &[u32], shared_prefix: usize| {
        llm.generate_batch(&[BatchPrompt { prompt, sampling: Sampling::Greedy, shared_prefix }], &opts)
            .unwrap()
            .remove(0)
    };
    run(&first, shared);
    // Whole answers of other prompts, more positions than the cache holds.
    let mut filled = 0;
    for k in 0.. {
        let filler = format!("Filler prompt {k}: {}", "the robot drives along the corridor and reports. ".repeat(20));
        let p = chat(&filler, Some("Report."));
        filled += run(&p, 0).prompt_tokens;
        if filled > PROMPT_CACHE_POSITIONS + 200 {
            break;
        }
    }
    let next = run(&chat(system, Some("Lidar dropout at 4.1 s.")), shared);
    assert_eq!(next.reused_prompt_tokens, shared, "the shared prefix was evicted by whole answers");
}

"""The LLM summarizer: agreement with llama.cpp on the same GGUF (tokenizer ids, greedy
tokens), and the `summarizer` node over real DDS (a real model summary, the deadline
fallback, a corrupted model file)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, binary, child_env, simulate

MODEL = ROOT / '.cache' / 'llm' / 'SmolLM2-135M-Instruct.Q4_1.gguf'
REF = [sys.executable, str(ROOT / 'tests' / 'llama_cpp_ref.py')]
SYSTEM = 'You are a helpful AI assistant named SmolLM, trained by Hugging Face'


def chat(user: str) -> str:
    return f'<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n'


# Greedy continuations that llama.cpp and our decoder must reproduce token for token. Each
# is a natural question whose answer is well conditioned (see test_divergence_only_at_near_ties
# for prompts where it is not).
IDENTICAL_PROMPTS = [
    chat('Count from one to ten.'),
    chat('Spell the word robot letter by letter.'),
    chat('What does an IMU measure?'),
]
OTHER_PROMPTS = [
    # Identical on the Intel machines of earlier sessions; on an AMD EPYC with AVX2 and no
    # AVX-512 (our decoder's kernels then sum in another order) the llama.cpp-arithmetic run
    # diverges at token 9, where our top-2 margin is 0.023: checked as a near tie.
    chat('List three colors.'),
    # Identical against llama.cpp's AVX-512 kernels, a near tie at token 16 against its AVX2
    # build (the reference is built for AVX2 since session 11): checked as a near tie.
    chat('Explain what a camera sensor does in one sentence.'),
    # Identical through the Burn decode path; the CPU decoder (2026-12-06) takes the other
    # side of a tie at token 14 (sky; our top-2 margin 0.007) and at token 24 (LiDAR; 0.071):
    # checked as near ties. Its decoded logits are as close to llama.cpp's as the Burn
    # path's (docs/models.md).
    chat('What color is the sky on a clear day?'),
    chat('Explain what a LiDAR sensor does in one sentence.'),
    chat('What is the capital of France?'),
    chat('Write a haiku about robots.'),
    chat('A person entered the forward safety zone of the robot 3 m ahead. Summarize for the operator.'),
    chat('Name the planets of the solar system.'),
    chat('Who wrote Romeo and Juliet?'),
    chat('How many legs does a spider have?'),
    'The quick brown fox',
    'def fibonacci(n):',
    'Once upon a time,',
]
TOKENIZER_TEXTS = [
    'Hello world',
    'Ünïcödé: naïve café, Straße, 日本語のテキスト, emoji 🚀🤖 and math ∑x²',
    'digits 1234567890 and 3.14159, 1,000,000 and 2026-11-21T14:47:00Z',
    'whitespace  runs   of\tall\t\tkinds\n\n\nand   trailing   ',
    "contractions: don't, it's, we'll, they've, I'm, she'd",
    chat('Summarize: track 7 entered zone "forward" at x=3.1 m.') + 'A person entered the zone.<|im_end|>\n',
    '<|endoftext|><|im_start|><|im_end|> special tokens in a row',
    'code: fn main() { println!("{}", 0x1F); } // comment\n    indented',
]


def ours(tmp_path: Path, sub: str, flag: str, payload: list[str], *extra: str) -> dict:
    f = tmp_path / f'{sub}.json'
    f.write_text(json.dumps(payload))
    res = subprocess.run([binary('fusion_llm'), '--model', str(MODEL), sub, f'--{flag}', str(f), *extra],
                         capture_output=True, text=True, env=child_env(), timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def reference(cmd: str, tmp_path: Path, payload: list[str], *extra: str) -> dict:
    f = tmp_path / f'ref-{cmd}.json'
    f.write_text(json.dumps(payload))
    env = dict(os.environ, LLAMA_KV='f32', LLAMA_THREADS='2')
    res = subprocess.run([*REF, cmd, str(MODEL), str(f), *extra], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_tokenizer_ids_equal_llama_cpp(tmp_path):
    got = ours(tmp_path, 'tokenize', 'texts-json', TOKENIZER_TEXTS)['ids']
    want = reference('tokenize', tmp_path, TOKENIZER_TEXTS)['ids']
    for text, g, w in zip(TOKENIZER_TEXTS, got, want):
        assert g == w, f'{text!r}: ours {g} llama.cpp {w}'


def greedy_pairs(tmp_path, prompts, name, *flags):
    got = ours(tmp_path, 'generate', 'prompts-json', prompts, '--raw', '--max-tokens', '32', *flags)['results']
    want = reference('generate', tmp_path, prompts, '32')['results']
    assert len(got) == len(want) == len(prompts), name
    return list(zip(prompts, got, want))


def test_first_32_greedy_tokens_equal_llama_cpp(tmp_path):
    """The default configuration: llama.cpp's arithmetic throughout (8-bit activations for the
    prompt too, the whole prompt per pass through the CPU decoder)."""
    for prompt, g, w in greedy_pairs(tmp_path, IDENTICAL_PROMPTS, 'identical'):
        assert g['tokens'] == w['tokens'], f'{prompt!r}:\n ours     {g["tokens"]}\n llama.cpp {w["tokens"]}\n {g["text"]!r}'
        assert len(g['tokens']) == 32 or g['stop'] == 'end_of_turn'


def test_divergence_only_at_near_ties(tmp_path):
    """Both engines quantize activations to 8 bits per 32 values; float rounding differences
    (summation order, exp/rsqrt implementations) move some values across a rounding boundary,
    which shifts single logits by up to ~0.9 on this model (measured with the `logits`
    commands of both engines at the divergence points below: max |Δlogit| 0.56-0.91 over the
    vocabulary, both prompt modes). So where two candidates are closer than that, greedy
    decoding may pick either: the France prompt diverges at token 15 where our top-2 margin
    is 0.68 (default mode, llama.cpp built for AVX2). Everything before a divergence must be
    identical, and at the divergence our top two logits must be within that noise (< 1.0; a
    wrong kernel moves logits by several units and diverges at confident tokens, whose
    margins here are 1-12). This runs the default configuration (llama.cpp's arithmetic) on
    the prompts not in IDENTICAL_PROMPTS, and prompts in f32 through Burn (`--prompt-f32`,
    more exact than llama.cpp's 8-bit activations) on every prompt."""
    pairs = greedy_pairs(tmp_path, OTHER_PROMPTS, 'default')
    pairs += greedy_pairs(tmp_path, IDENTICAL_PROMPTS + OTHER_PROMPTS, 'f32', '--prompt-f32')
    for prompt, g, w in pairs:
        a, b = g['tokens'], w['tokens']
        n = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
        if n is None:
            continue
        assert g['margins'][n] < 1.0, f'{prompt!r}: diverged at token {n} with a top-2 margin of {g["margins"][n]:.3f}'


@pytest.fixture(scope='module')
def tiny_gguf(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('tiny') / 'tiny-llama.gguf'
    res = subprocess.run([sys.executable, str(ROOT / 'tests' / 'make_tiny_gguf.py'), str(MODEL), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return out


def test_another_llama_gguf_loads_by_path_and_matches_llama_cpp(tmp_path, tiny_gguf):
    """A second model of the family (tests/make_tiny_gguf.py: random weights in F16, BF16,
    Q4_0, Q4_1, Q8_0, untied output, other widths/heads/rope) loads by path; its next-token
    logits match llama.cpp's on the same file (same choice; within 0.25 standard deviations
    of the logits — measured ≤ 0.11), for short prompts and ≥ 32-token ones, in both prompt
    modes."""
    import numpy as np

    prompts = [chat('What color is the sky on a clear day?'), 'Hi', 'The quick brown fox', chat('Count from one to ten.')]
    f = tmp_path / 'prompts.json'
    f.write_text(json.dumps(prompts))
    env = dict(os.environ, LLAMA_KV='f32', LLAMA_THREADS='2')
    res = subprocess.run([*REF, 'logits', str(tiny_gguf), str(f)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    want = json.loads(res.stdout)['logits']
    for flags in ([], ['--prompt-f32']):
        res = subprocess.run([binary('fusion_llm'), '--model', str(tiny_gguf), *flags, 'logits', '--prompts-json', str(f)],
                             capture_output=True, text=True, env=child_env(), timeout=300)
        assert res.returncode == 0, res.stderr
        for p, g, w in zip(prompts, json.loads(res.stdout)['logits'], want):
            g, w = np.array(g), np.array(w)
            assert g.argmax() == w.argmax(), (flags, p)
            assert np.abs(g - w).max() < 0.25 * w.std(), (flags, p, np.abs(g - w).max(), w.std())


def test_the_cpu_decoder_matches_llama_cpp_on_another_block_quantized_model(tmp_path):
    """The CPU decoder (one pass per token) against llama.cpp decoding token by token, on a
    model it was not shaped around (tests/make_tiny_gguf.py --blocks: random weights in Q4_0,
    Q4_1 and Q8_0, width 128, heads of 32, rope base 500000, untied output): the last 1 and 12
    tokens of each prompt decoded one at a time give the same choice and logits within the
    noise of 8-bit activations: ≤ 0.1 standard deviations of llama.cpp's logits on average and
    ≤ 0.5 at most. Measured (2026-12-06): 0.042–0.066 and 0.24–0.35 (this random Q4 model
    moves more under a flipped activation rounding than the other tiny model does). The prompt
    before those tokens runs in the CPU decoder too, a chunk per pass, bit for bit as if
    decoded token by token (models/tests/llm.rs), so this is the default path's agreement."""
    import numpy as np

    model = tmp_path / 'tiny-blocks.gguf'
    res = subprocess.run([sys.executable, str(ROOT / 'tests' / 'make_tiny_gguf.py'), str(MODEL), str(model), '--blocks'],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    prompts = [chat('What color is the sky on a clear day?'), 'The quick brown fox jumps over the lazy dog again',
               chat('Count from one to ten.')]
    f = tmp_path / 'prompts.json'
    f.write_text(json.dumps(prompts))
    env = dict(os.environ, LLAMA_KV='f32', LLAMA_THREADS='2')
    for last in (1, 12):
        res = subprocess.run([*REF, 'logits', str(model), str(f), str(last)], capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 0, res.stderr
        want = json.loads(res.stdout)['logits']
        res = subprocess.run([binary('fusion_llm'), '--model', str(model), 'logits', '--prompts-json',
                              str(f), '--decode-last', str(last)], capture_output=True, text=True, env=child_env(),
                             timeout=300)
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
        assert got['decode'] == 'cpu decoder', got['decode']
        for p, g, w in zip(prompts, got['logits'], want):
            g, w = np.array(g), np.array(w)
            assert g.argmax() == w.argmax(), (last, p)
            diff = np.abs(g - w)
            assert diff.mean() < 0.1 * w.std() and diff.max() < 0.5 * w.std(), (last, p, diff.mean(), diff.max(),
                                                                                 w.std())


# ---- the node over DDS -------------------------------------------------------------------

def zone_event(event_id: int, stamp_s: int):
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import KeyValue
    from fusion_msgs.msg import AnomalyEvent
    from geometry_msgs.msg import Point

    m = AnomalyEvent()
    m.header.stamp = Time(sec=stamp_s, nanosec=0)
    m.header.frame_id = 'base_link'
    m.event_id = event_id
    m.kind = AnomalyEvent.KIND_ZONE_INTRUSION
    m.severity = AnomalyEvent.WARN
    m.rule = 'track_inside_zone'
    m.measured_value = 3.14
    m.threshold = 0.0
    m.sensors = ['lidar', 'radar', 'camera']
    m.track_ids = [7]
    m.zone = 'forward'
    m.position = Point(x=3.1, y=0.5, z=0.9)
    m.onset = Time(sec=stamp_s, nanosec=0)
    m.evidence = [KeyValue(key='label', value='person'), KeyValue(key='distance_m', value='3.14')]
    return m


def events_qos():
    """/anomaly/events as fusion_node publishes it: reliable, keep-last 100, transient-local."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def run_node(procs, ros, *params: str):
    from fusion_msgs.msg import AnomalyEvent, AnomalySummary
    from std_msgs.msg import String

    node = procs([binary('summarizer'), '--ros-args', '-p', 'coalesce_window:=0.5', *params], name='summarizer')
    probe = ros()
    probe.subscribe('/anomaly/summary', String)
    probe.subscribe('/anomaly/summary_detailed', AnomalySummary)
    pub = probe.publisher('/anomaly/events', AnomalyEvent, events_qos())
    probe.wait_matched(pub, 1, timeout=30)
    probe.wait_publishers('/anomaly/summary_detailed', 1, timeout=30)
    return node, probe, pub


def test_node_publishes_a_model_summary_for_a_zone_intrusion(procs, ros):
    node, probe, pub = run_node(procs, ros, '-p', 'deadline:=20.0')
    # Every thread of the node (rcl/DDS, executor, model) runs at the lowest CPU priority.
    tids = [int(t) for t in os.listdir(f'/proc/{node.p.pid}/task')]
    assert len(tids) > 3
    assert all(os.sched_getscheduler(t) == os.SCHED_IDLE and os.getpriority(os.PRIO_PROCESS, t) == 19 for t in tids)
    pub.publish(zone_event(41, 100))
    probe.wait_for(lambda: probe.count('/anomaly/summary_detailed') >= 1, 60, f'a summary; log:\n{node.output()}')
    s = probe.get('/anomaly/summary_detailed')[0]
    assert list(s.event_ids) == [41] and list(s.kinds) == ['zone_intrusion']
    assert not s.fallback and s.fallback_reason == '', (s.fallback_reason, s.text, node.output())
    assert s.model.lower().startswith('smollm2') and s.tokens_generated > 0 and s.generation_time_s > 0
    text = s.text.lower()
    assert any(w in text for w in ('person', 'zone', 'forward', 'track')), s.text
    assert s.header.stamp.sec == 100
    probe.wait_for(lambda: probe.count('/anomaly/summary') >= 1, 10, '/anomaly/summary')
    assert probe.get('/anomaly/summary')[0].data == s.text


def test_node_falls_back_to_the_template_when_the_deadline_is_missed(procs, ros):
    node, probe, pub = run_node(procs, ros, '-p', 'deadline:=0.001')
    # A burst: three events inside the window → one summary.
    for i in range(3):
        pub.publish(zone_event(50 + i, 200 + i))
    probe.wait_for(lambda: probe.count('/anomaly/summary_detailed') >= 1, 30, f'a summary; log:\n{node.output()}')
    s = probe.get('/anomaly/summary_detailed')[0]
    assert s.fallback and s.fallback_reason == 'deadline' and s.model == 'template'
    assert list(s.event_ids) == [50, 51, 52]
    assert s.text.startswith('3 anomaly events. Warning at t=200.0 s: a person (track 7) entered the \'forward\' safety zone')


def test_node_falls_back_when_the_model_answers_garbage(procs, ros, tiny_gguf):
    # The random-weight model loads (by path, no hash) and answers noise.
    node, probe, pub = run_node(procs, ros, '-p', f'model:={tiny_gguf}', '-p', 'deadline:=20.0')
    assert 'tiny-llama-test' in node.output()
    pub.publish(zone_event(70, 400))
    probe.wait_for(lambda: probe.count('/anomaly/summary_detailed') >= 1, 60, f'a summary; log:\n{node.output()}')
    s = probe.get('/anomaly/summary_detailed')[0]
    assert s.fallback and s.fallback_reason in ('garbage_output', 'ungrounded_output', 'empty_output'), s.fallback_reason
    assert s.model == 'template' and s.text.startswith('Warning at t=400.0 s: a person (track 7)')


def test_corrupted_model_gives_a_clear_error_and_fallback_summaries(procs, ros, tmp_path):
    bad = tmp_path / 'corrupted.gguf'
    data = bytearray(MODEL.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    sha = 'deadbeef' * 8  # a string (all digits would be read as an integer parameter)
    node, probe, pub = run_node(procs, ros, '-p', f'model:={bad}', '-p', f'model_sha256:={sha}')
    pub.publish(zone_event(60, 300))
    probe.wait_for(lambda: probe.count('/anomaly/summary_detailed') >= 1, 30, f'a summary; log:\n{node.output()}')
    s = probe.get('/anomaly/summary_detailed')[0]
    assert s.fallback and s.fallback_reason == 'load_error' and list(s.event_ids) == [60]
    assert 'fails the integrity check' in node.output() and sha in node.output()
    assert node.alive()
    # A truncated file (no hash given) is refused by the parser, with the reason.
    short = tmp_path / 'short.gguf'
    short.write_bytes(bytes(data[: len(data) // 3]))
    node2 = procs([binary('summarizer'), '--ros-args', '-r', '__node:=summarizer2', '-p', f'model:={short}',
                   '-p', 'coalesce_window:=0.2'], name='summarizer2')
    probe.wait_for(lambda: 'past the end of the file' in node2.output(), 30, f'the parse error; log:\n{node2.output()}')
    probe.wait_matched(pub, 2, timeout=30)
    pub.publish(zone_event(61, 301))
    # (The late-joining node2 is also handed event 60 from the transient-local history, and
    # may summarize it together with 61.)
    probe.wait_for(lambda: sum(1 for m in probe.get('/anomaly/summary_detailed') if 61 in m.event_ids) >= 2, 30,
                   'both nodes summarize event 61')
    assert all(m.fallback for m in probe.get('/anomaly/summary_detailed'))


def test_pending_events_survive_a_kill_and_none_is_summarized_twice(procs, ros, tmp_path):
    """SIGKILL while events wait in the coalescing window: the next process summarizes them
    (from its journal), and the event sent while no summarizer ran (transient-local history);
    the events already summarized, delivered again, are not summarized twice."""
    import signal

    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import AnomalyEvent, AnomalySummary

    state = tmp_path / 'state'
    journal = state / 'summarizer.pending.jsonl'
    common = ['-p', f'state_dir:={state}', '-p', 'deadline:=0.001']
    # Every subscription before the first summarizer starts. Transient-local, as an operator
    # display should subscribe: the restarted summarizer publishes the restored events'
    # summary within a second, before this participant has discovered it (1-3 s here).
    probe = ros()
    probe.subscribe('/anomaly/summary_detailed', AnomalySummary, events_qos())
    probe.subscribe('/diagnostics', DiagnosticArray)
    pub = probe.publisher('/anomaly/events', AnomalyEvent, events_qos())
    node = procs([binary('summarizer'), '--ros-args', *common, '-p', 'coalesce_window:=0.5'], name='summarizer')
    probe.wait_matched(pub, 1, timeout=30)
    probe.wait_publishers('/anomaly/summary_detailed', 1, timeout=30)
    pub.publish(zone_event(80, 500))
    probe.wait_for(lambda: probe.count('/anomaly/summary_detailed') >= 1, 30, f'the first summary; log:\n{node.output()}')
    node.stop()
    # A long window: events 81 and 82 are accepted and still pending when the process dies.
    node = procs([binary('summarizer'), '--ros-args', *common, '-p', 'coalesce_window:=30.0'], name='summarizer_b')
    probe.wait_matched(pub, 1, timeout=30)
    for i in (81, 82):
        pub.publish(zone_event(i, 500 + i))

    def journaled():
        text = journal.read_text() if journal.exists() else ''
        return '"event_id":81' in text and '"event_id":82' in text

    probe.wait_for(journaled, 20, f'events 81 and 82 journaled; log:\n{node.output()}')
    os.kill(node.p.pid, signal.SIGKILL)
    node.p.wait(10)
    assert probe.count('/anomaly/summary_detailed') == 1
    pub.publish(zone_event(83, 583))  # no summarizer runs now
    node = procs([binary('summarizer'), '--ros-args', *common, '-p', 'coalesce_window:=0.5'], name='summarizer_c')

    def summarized():
        return sorted(i for m in probe.get('/anomaly/summary_detailed') for i in m.event_ids)

    probe.wait_for(lambda: summarized() == [80, 81, 82, 83], 30, f'all four summarized; got {summarized()} diag {probe.count("/diagnostics")} {[(s.name, s.hardware_id) for m in probe.get("/diagnostics")[-3:] for s in m.status]}\n{node.output()}')
    assert 'not yet summarized; summarizing them now' in node.output()

    def value(key):
        vals = [kv.value for m in probe.get('/diagnostics') for s in m.status if s.hardware_id == 'summarizer'
                for kv in s.values if kv.key == key]
        return vals[-1] if vals else None

    # 80, 81, 82 came again in the transient-local history: recognised, not summarized again.
    # The journal marks a burst done just after its summary is published, and /diagnostics
    # comes once a second: the pending count reaches 0 within one more report.
    probe.wait_for(lambda: (value('events_duplicate'), value('events_restored'), value('events_pending_persisted'))
                   == ('3', '2', '0'), 10,
                   f'duplicates counted, nothing left pending; restored {value("events_restored")}, '
                   f'duplicate {value("events_duplicate")}, pending {value("events_pending_persisted")}')
    assert value('journal_errors') == '0'
    import time as _time
    _time.sleep(1.5)
    assert summarized() == [80, 81, 82, 83]


def wav_figures(path: Path) -> tuple[float, float, float]:
    """Duration (s), RMS, and the share of 50 ms frames that are not silence."""
    import wave

    import numpy as np

    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    x = samples.astype(np.float64)
    frames = x[: len(x) // (rate // 20) * (rate // 20)].reshape(-1, rate // 20)
    voiced = float(np.mean(np.sqrt(np.mean(frames ** 2, axis=1)) > 100.0))
    return len(x) / rate, float(np.sqrt(np.mean(x ** 2))), voiced


def test_speak_mode_writes_an_audible_wav_per_summary(procs, ros, tmp_path):
    from std_msgs.msg import String

    speech = tmp_path / 'speech'
    # The template (no model) is enough: every published summary is spoken, whoever wrote it.
    node, probe, pub = run_node(procs, ros, '-p', f'model:={tmp_path / "none.gguf"}', '-p', 'speak:=true',
                                '-p', f'speak_dir:={speech}')
    probe.subscribe('/anomaly/summary_audio_path', String)
    probe.wait_publishers('/anomaly/summary_audio_path', 1, timeout=30)
    pub.publish(zone_event(80, 500))
    pub.publish(zone_event(81, 500))
    probe.wait_for(lambda: probe.count('/anomaly/summary_audio_path') >= 1, 30, f'an audio path; log:\n{node.output()}')
    text = probe.get('/anomaly/summary')[0].data
    path = Path(probe.get('/anomaly/summary_audio_path')[0].data)
    assert path.parent == speech and path.name.endswith('_event80.wav') and path.is_file()
    sentences = text.count('. ') + 1
    assert sentences == 3, text  # "2 anomaly events." and one sentence per event
    seconds, rms, voiced = wav_figures(path)
    assert seconds > 0.5 * sentences, (seconds, text)
    assert rms > 300 and voiced > 0.3, (rms, voiced)
    assert not list(speech.glob('.*partial')), 'only complete files are left'


def test_fusion_replay_writes_a_summary_for_every_event(tmp_path):
    bag, out = tmp_path / 'bag', tmp_path / 'out'
    simulate(bag, 'pedestrian_intrusion', 4, 12)
    res = subprocess.run([binary('fusion_replay'), str(bag), '--out', str(out), '--summaries', '--summary-deadline', '30'],
                         capture_output=True, text=True, env=child_env(), timeout=600)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in (out / 'events.jsonl').read_text().splitlines()]
    summaries = [json.loads(line) for line in (out / 'summaries.jsonl').read_text().splitlines()]
    assert events and summaries
    covered = [i for s in summaries for i in s['event_ids']]
    assert sorted(covered) == sorted(e['event_id'] for e in events)  # each event in exactly one summary
    by_model = [s for s in summaries if not s['fallback']]
    assert by_model, summaries  # a 30 s deadline is met on any machine
    for s in by_model:
        assert s['model'].lower().startswith('smollm2') and s['text'] and s['tokens_generated'] > 0
    assert 'summaries (' in res.stderr
    # The summary benchmark on this run: whatever is published (model or template) is verified
    # true of its events, for one candidate and for best-of-3.
    bench = subprocess.run([binary('fusion_bench_summaries'), str(out), '--candidates', '1,3', '--deadline', '30',
                            '--model', str(ROOT / '.cache' / 'llm' / 'SmolLM2-135M-Instruct.Q4_1.gguf')],
                           capture_output=True, text=True, env=child_env(), timeout=600)
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert report['bursts'] == len(summaries) and report['template']['unverified'] == 0, report
    for row in report['by_candidates']:
        assert row['published_unverified'] == 0, row
    assert report['by_candidates'][1]['model_written_share'] >= report['by_candidates'][0]['model_written_share']


EDGE_CASES = ROOT / 'models' / 'bench' / 'summary_edge_cases' / 'events.jsonl'


def test_summaries_of_hand_made_edge_cases_are_faithful(tmp_path):
    """The hand-made bursts of the summary benchmark (scripts/summary_edge_cases.py): the
    template verifies on every one of them (it is what goes out whenever the model cannot),
    and on a slice — the disagreement + intrusion burst, missing evidence, tiny numbers, the
    8-kind burst — whatever is published, by the model or not, verifies."""
    def bench(run_dir, *args):
        res = subprocess.run([binary('fusion_bench_summaries'), str(run_dir), '--model', str(MODEL), *args],
                             capture_output=True, text=True, env=child_env(), timeout=600)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    # A 1 ms deadline: the model never answers, every burst is the template.
    report = bench(EDGE_CASES.parent, '--candidates', '1', '--deadline', '0.001')
    assert report['bursts'] >= 40 and report['template']['unverified'] == 0, report['template']
    events = [json.loads(line) for line in EDGE_CASES.read_text().splitlines()]
    bursts: dict[int, list] = {}
    for e in events:
        bursts.setdefault(e['stamp_ns'] // 10**10, []).append(e)
    groups = list(bursts.values())
    kinds = [len({e['kind'] for e in g}) for g in groups]
    missing = next(g for g in groups if not g[0]['evidence'])
    tiny = next(g for g in groups if g[0]['position'][0] < 0.1 and g[0]['kind'] == 'zone_intrusion')
    disagreement_and_intrusion = next(g for g in groups if [e['kind'] for e in g] == ['sensor_disagreement', 'zone_intrusion'])
    pick = [missing, tiny, disagreement_and_intrusion, groups[kinds.index(max(kinds))]]
    (tmp_path / 'slice').mkdir()
    (tmp_path / 'slice' / 'events.jsonl').write_text(
        ''.join(json.dumps(e) + '\n' for e in sorted((e for g in pick for e in g), key=lambda e: e['stamp_ns'])))
    report = bench(tmp_path / 'slice', '--candidates', '1', '--deadline', '30')
    assert report['bursts'] == 4, report['bursts']
    row = report['by_candidates'][0]
    assert row['published_unverified'] == 0, row


RANDOM_BURSTS = ROOT / 'models' / 'bench' / 'summary_random_bursts' / 'events.jsonl'


def test_summaries_of_random_bursts_drawn_apart_from_our_generators_are_faithful(tmp_path):
    """Bursts nothing in the summarizer was shaped around (scripts/summary_random_bursts.py:
    a user's zone names, `unknown` labels, tracks up to 60000, a deadline of 66.7 ms, wall-clock
    stamps of 2027): the committed file is what the script writes, the coalescer
    keeps its 60 bursts, and the template verifies on every one. (The template first said
    "its 100 ms hard deadline" whatever the configured deadline: the verifier caught it here,
    on a window of 50 sets, where the edge cases' window of 100 had hidden it.)"""
    regenerated = tmp_path / 'events.jsonl'
    subprocess.run([sys.executable, str(ROOT / 'scripts' / 'summary_random_bursts.py'), str(regenerated)], check=True,
                   capture_output=True)
    assert regenerated.read_text() == RANDOM_BURSTS.read_text(), 'regenerate with scripts/summary_random_bursts.py'
    res = subprocess.run([binary('fusion_bench_summaries'), str(RANDOM_BURSTS.parent), '--model', str(MODEL),
                          '--candidates', '1', '--deadline', '0.001'],
                         capture_output=True, text=True, env=child_env(), timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report['bursts'] == 60, report['bursts']
    assert report['template']['unverified'] == 0, report['template']
    row = report['by_candidates'][0]
    assert row['published_unverified'] == 0, row

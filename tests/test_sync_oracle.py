"""fusion's ApproximateTime against the C++ message_filters implementation (Debian's
libmessage-filters-dev) on randomized streams: the emitted sets must be identical."""
from __future__ import annotations

import random
import subprocess

import pytest
from conftest import ROOT

FUSION_SYNC = ROOT / 'target' / 'release' / 'fusion_sync'
ORACLE_SRC = ROOT / 'tests' / 'oracle' / 'approximate_time_oracle.cpp'
STREAMS = 100_000

# `make test-fast` runs this file (seconds per test).
pytestmark = pytest.mark.fast


@pytest.fixture(scope='module')
def oracle(tmp_path_factory):
    exe = tmp_path_factory.mktemp('oracle') / 'approximate_time_oracle'
    flags = subprocess.run(['pkg-config', '--cflags', '--libs', 'message_filters'], capture_output=True, text=True,
                           check=True).stdout.split()
    subprocess.run(['g++', '-O2', '-std=c++14', '-o', str(exe), str(ORACLE_SRC), *flags], check=True)
    return exe


def random_stream(rng: random.Random) -> tuple[str, list[tuple[int, int]]]:
    n = rng.randint(2, 9)
    queue = rng.choice([1, 2, 3, 5, 10, rng.randint(1, 20)])
    age = rng.choice([0.0, 0.1, 0.5, round(rng.uniform(0, 2), 3)])
    max_interval = rng.choice([0, 0, rng.randint(1, 40_000_000)])
    lower = [0] * n
    if rng.random() < 0.3:
        lower = [rng.randint(0, 30_000_000) for _ in range(n)]
    msgs = []
    for topic in range(n):
        period = rng.randint(2_000_000, 100_000_000)
        t = rng.randint(1, 50_000_000)
        drop = rng.choice([0.0, 0.1, 0.4])
        jitter = rng.choice([0, period // 10, period // 2])
        burst = rng.random() < 0.2
        for _ in range(rng.randint(1, 16)):
            if rng.random() >= drop:
                stamp = max(1, t + rng.randint(-jitter, jitter) if jitter else t)
                msgs.append((topic, stamp))
                if burst and rng.random() < 0.3:
                    msgs.append((topic, stamp + rng.randint(0, 1000)))
            t += period
    # Arrival order: by stamp plus a per-topic transport delay, so topics interleave
    # realistically and sometimes arrive late.
    delay = [rng.choice([0, rng.randint(0, 60_000_000)]) for _ in range(n)]
    msgs.sort(key=lambda m: (m[1] + delay[m[0]], m[0]))
    header = f"stream {n} {queue} {age} {max_interval} {' '.join(map(str, lower))}"
    return header, msgs


def run_batch(exe, text: str, extra=()) -> list[str]:
    res = subprocess.run([str(exe), *extra], input=text, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return res.stdout.split('end\n')


def test_identical_sets_on_100k_randomized_streams(oracle):
    rng = random.Random(20261121)
    parts = []
    for _ in range(STREAMS):
        header, msgs = random_stream(rng)
        parts.append(header + '\n' + ''.join(f'{t} {s}\n' for t, s in msgs) + 'end\n')
    text = ''.join(parts)
    want = run_batch(oracle, text)
    got = run_batch(FUSION_SYNC, text, ['--batch'])
    assert len(want) == len(got) == STREAMS + 1
    # The streams exercise the policy: many sets, and many streams with several sets.
    assert sum(w.count('\n') for w in want) > 40_000
    assert sum(w.count('\n') >= 2 for w in want) > 10_000
    for k, (w, g) in enumerate(zip(want, got)):
        assert g == w, f'stream {k} differs:\n{parts[k]}\noracle:\n{w}\nfusion_sync:\n{g}'


def test_single_stream_cli_matches_the_oracle(oracle):
    rng = random.Random(7)
    for _ in range(20):
        header, msgs = random_stream(rng)
        f = header.split()
        n = int(f[1])
        args = ['--topics', f[1], '--queue-size', f[2], '--age-penalty', f[3], '--max-interval-ns', f[4]]
        if any(int(x) for x in f[5:]):
            for lb in f[5:5 + n]:
                args += ['--lower-bound-ns', lb]
        body = ''.join(f'{t} {s}\n' for t, s in msgs)
        want = run_batch(oracle, header + '\n' + body + 'end\n')[0]
        res = subprocess.run([str(FUSION_SYNC), *args], input=body, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout == want


def test_bad_input_is_a_clear_error():
    for args, text, msg in [(['--topics', '1'], '', '--topics must be 2..9'),
                            (['--topics', '2'], '0 5\n7 9\n', 'out of range'),
                            (['--topics', '2'], 'zero 5\n', "bad topic index 'zero'"),
                            (['--topics', '3', '--lower-bound-ns', '1'], '', 'give all 3 lower bounds or none')]:
        res = subprocess.run([str(FUSION_SYNC), *args], input=text, capture_output=True, text=True, timeout=30)
        assert res.returncode == 1 and msg in res.stderr, res.stderr

#!/usr/bin/env python3
"""A soak: nominal sensor load through the launched node set for a long time (`make soak`,
30 minutes by default; not part of CI). Prints one JSON object.

    python scripts/soak.py [--seconds 1800] [--sample 10] [--bag DIR] [--out soak.json]

The load is a fusion_sim `nominal` recording played in a loop with `--restamp` (stamps follow
the wall clock, so the nodes measure real latency and every loop continues the timeline).
Every `--sample` seconds it reads each node's RSS and CPU time from /proc and the latest
/diagnostics of every node (rclpy). The JSON reports, per node, RSS first/max/last and its
least-squares slope (MB per hour), CPU share mean/max, and at the end fusion_node's sets,
deadline misses and latency, every drop/rejection/shed counter by reason, and the events.

Run from the repository root with the ROS environment sourced and the package installed
(make soak does both).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / 'target' / 'release'
NODES = ['camera_ingest', 'lidar_ingest', 'radar_ingest', 'imu_ingest', 'fusion_node', 'summarizer']
CLK_TCK = os.sysconf('SC_CLK_TCK')
# Counters that count a loss, by name: what the soak must show as zero (or explain).
LOSS = re.compile(r'(drop|reject|shed|overflow|miss|error|failed)', re.I)


def child_env():
    return {k: v for k, v in os.environ.items() if not k.startswith('LD_')}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def slope_per_hour(ts: list[float], ys: list[float]) -> float:
    if len(ts) < 2:
        return 0.0
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return 0.0 if den == 0 else sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den * 3600


def level(v) -> int:
    """DiagnosticStatus.level: rclpy gives a byte."""
    return v[0] if isinstance(v, (bytes, bytearray)) else int(v)


class Diagnostics:
    """The newest key/values of every /diagnostics status, and the events seen (rclpy)."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from fusion_msgs.msg import AnomalyEvent, AnomalySummary

        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node('soak_probe')
        self.lock = threading.Lock()
        self.status: dict[str, dict] = {}
        self.events: dict[str, int] = {}
        self.summaries = {'llm': 0, 'fallback': 0}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.on_diag, 100)
        self.node.create_subscription(AnomalyEvent, '/anomaly/events', self.on_event, 100)
        self.node.create_subscription(AnomalySummary, '/anomaly/summary_detailed', self.on_summary, 100)
        self.running = True
        self.thread = threading.Thread(target=self.spin, daemon=True)
        self.thread.start()

    def spin(self):
        while self.running and self.rclpy.ok():
            self.rclpy.spin_once(self.node, timeout_sec=0.1)

    def on_diag(self, m):
        with self.lock:
            for s in m.status:
                self.status.setdefault(s.name, {}).update(
                    {'level': level(s.level), 'message': s.message, **{kv.key: kv.value for kv in s.values}})

    def on_event(self, m):
        with self.lock:
            key = f'{m.kind}/{m.rule}'
            self.events[key] = self.events.get(key, 0) + 1

    def on_summary(self, m):
        with self.lock:
            self.summaries['fallback' if m.fallback else 'llm'] += 1

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.status)), dict(self.events), dict(self.summaries)

    def close(self):
        self.running = False
        self.thread.join(2)
        self.node.destroy_node()
        self.rclpy.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seconds', type=float, default=float(os.environ.get('SOAK_SECONDS', 1800)))
    ap.add_argument('--sample', type=float, default=10.0)
    ap.add_argument('--bag', help='a recording to loop (default: 30 s of fusion_sim nominal, made here)')
    ap.add_argument('--out', help='also write the JSON here')
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix='sf_soak_'))
    bag = Path(a.bag) if a.bag else work / 'nominal'
    if not a.bag:
        subprocess.run([str(BIN / 'fusion_sim'), '--scenario', 'nominal', '--seed', '31', '--duration', '30',
                        '--out', str(bag)], check=True, env=child_env(), stdout=subprocess.DEVNULL)
    prefix = Path(os.environ.get('SF_INSTALL_PREFIX', ROOT / 'install'))
    env = child_env()
    env['AMENT_PREFIX_PATH'] = f"{prefix}:{env.get('AMENT_PREFIX_PATH', '')}"
    env['ROS_HOME'] = str(work / 'ros_home')
    launch_log = open(work / 'launch.log', 'w+')
    launch = subprocess.Popen([str(prefix / 'bin/fusion_launch'), 'sensor_fusion', 'fusion.launch.xml',
                               '--grace', '5'], stdout=launch_log, stderr=subprocess.STDOUT, env=env)
    diag = Diagnostics()
    player = subprocess.Popen([str(BIN / 'fusion_bag'), 'play', str(bag), '--loop', '--restamp', '--delay', '3'],
                              stdout=subprocess.DEVNULL, stderr=open(work / 'play.log', 'w'), env=child_env())
    samples: dict[str, list[tuple[float, float, float]]] = {n: [] for n in NODES}
    last_cpu: dict[str, tuple[float, float, int]] = {}
    start = time.monotonic()
    # Warm-up: the nodes start, load their models and see the first loop before sampling.
    time.sleep(15)
    try:
        while time.monotonic() - start < a.seconds + 15:
            launch_log.flush()
            pids = {}
            for m in re.finditer(r'\] (\S+)-\d+: process started with pid \[(\d+)\]', (work / 'launch.log').read_text()):
                pids[m.group(1)] = int(m.group(2))  # the newest process of each node
            t = time.monotonic() - start
            for n in NODES:
                pid = pids.get(n)
                r, c = (rss_mb(pid), cpu_s(pid)) if pid else (None, None)
                if r is None or c is None:
                    continue
                # CPU share since the last sample (NaN at the first, or after a respawn).
                prev = last_cpu.get(n)
                same = prev is not None and prev[2] == pid and t > prev[0]
                share = (c - prev[1]) / (t - prev[0]) * 100 if same else float('nan')
                last_cpu[n] = (t, c, pid)
                samples[n].append((t, r, share))
            if launch.poll() is not None or player.poll() is not None:
                print(f'soak: exited early: launch {launch.poll()}, player {player.poll()}', file=sys.stderr)
                break
            time.sleep(a.sample)
    finally:
        status, events, summaries = diag.snapshot()
        player.send_signal(signal.SIGINT)
        launch.send_signal(signal.SIGINT)
        for p in (player, launch):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        try:
            diag.close()
        except Exception as e:  # rclpy may already be shut down by its SIGINT handler
            print(f'soak: rclpy shutdown: {e}', file=sys.stderr)

    launch_text = (work / 'launch.log').read_text()
    restarts = {n: max(0, len(re.findall(rf'\] {n}-\d+: process started', launch_text)) - 1) for n in NODES}
    nodes = {}
    for n, xs in samples.items():
        if not xs:
            nodes[n] = {'samples': 0}
            continue
        ts, rss = [x[0] for x in xs], [x[1] for x in xs]
        cpu = [x[2] for x in xs if x[2] == x[2]]
        # The slope over the second half: start-up allocations (models, DDS) are done by then.
        half = len(ts) // 2
        nodes[n] = {
            'samples': len(xs), 'rss_mb_first': round(rss[0], 1), 'rss_mb_max': round(max(rss), 1),
            'rss_mb_last': round(rss[-1], 1), 'rss_slope_mb_per_h': round(slope_per_hour(ts, rss), 2),
            'rss_slope_mb_per_h_second_half': round(slope_per_hour(ts[half:], rss[half:]), 2),
            'cpu_percent_mean': round(sum(cpu) / len(cpu), 1) if cpu else None,
            'cpu_percent_max': round(max(cpu), 1) if cpu else None, 'restarts': restarts[n],
            'rss_mb_series': [round(r, 1) for r in rss], 'cpu_percent_series': [round(c, 1) for c in cpu],
        }
    fusion = next((v for k, v in status.items() if k.endswith('fusion')), {})
    losses = {f'{name}: {k}': v for name, kv in status.items() for k, v in kv.items()
              if LOSS.search(k) and k not in ('level', 'message') and v not in ('0', '0.0', '')}
    out = {
        'seconds': round(time.monotonic() - start - 15, 1), 'sample_s': a.sample, 'bag': str(bag),
        'nodes': nodes,
        'fusion': {k: fusion.get(k) for k in ('sets', 'sets.released', 'sets.published', 'deadline.target_misses',
                                              'deadline.hard_misses', 'latency_p50_ms', 'latency_p99_ms',
                                              'latency_max_ms', 'degradation.level')},
        'nonzero_loss_counters': losses, 'events': events, 'summaries': summaries,
        'diagnostics_levels': {k: v.get('level') for k, v in status.items()},
        'log_dir': str(work),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())

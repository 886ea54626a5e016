#!/usr/bin/env python3
"""The scheduler benchmark over real DDS: the node set started from launch/fusion.launch.xml
(installed prefix, as `ros2 launch` runs it) with scheduler:=edf, then scheduler:=fifo, a
fusion_sim bag played at its recorded rate with `fusion_bag play --restamp` (stamps moved to
the wall clock, so every node measures real latency on the system clock: the raw driver
stamp → ingest node → /sensors/* → fusion_node → /fusion/objects).

Per run: end-to-end latency p50/p99/p99.9/max (FusedObjectArray.latency_ms: newest member's
stamp → publication, as fusion_node measures it at the publish call), target and hard misses
per 1,000 sets, shed sets, degradation level reached (fusion_node's /diagnostics), and
fusion_node's resident memory over time. Prints JSON.

    python scripts/bench_dds.py BAG [--schedulers edf,fifo]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from fusion_msgs.msg import FusedObjectArray


def pct(values, q):
    if not values:
        return 0.0
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def pid_of(name):
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open(f'/proc/{p}/comm') as f:
                if f.read().strip() == name[:15]:
                    return int(p)
        except OSError:
            pass
    return None


def rss_mib(pid, key):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def run(bag, scheduler, node):
    latencies = []
    diag = {}

    def on_objects(msg):
        latencies.append(float(msg.latency_ms))

    def on_diag(msg):
        for s in msg.status:
            if s.name.endswith('fusion_node: fusion'):
                diag.clear()
                diag.update({kv.key: kv.value for kv in s.values})

    subs = [node.create_subscription(FusedObjectArray, '/fusion/objects', on_objects,
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)),
            node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 100)]
    launch = subprocess.Popen(['fusion_launch', 'sensor_fusion', 'fusion.launch.xml', f'scheduler:={scheduler}'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pid = None
        deadline = time.time() + 60
        while pid is None and time.time() < deadline:
            pid = pid_of('fusion_node')
            time.sleep(0.2)
        if pid is None:
            raise RuntimeError('fusion_node did not start')
        rss = []
        stop = threading.Event()

        def sample():
            t0 = time.time()
            while not stop.is_set():
                anon, total = rss_mib(pid, 'RssAnon'), rss_mib(pid, 'VmRSS')
                if anon is not None:
                    rss.append((round(time.time() - t0, 2), round(anon, 1), round(total, 1)))
                stop.wait(0.5)
        sampler = threading.Thread(target=sample)
        sampler.start()
        # Spin while the bag plays; the player waits for the ingest nodes' subscriptions.
        player = subprocess.Popen(['fusion_bag', 'play', bag, '--restamp', '--wait-for-subscribers', '--delay', '2'],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while player.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.05)
        end = time.time() + 3.0   # the last sets and one more /diagnostics period
        while time.time() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        stop.set()
        sampler.join()
    finally:
        os.killpg(launch.pid, signal.SIGINT)
        try:
            launch.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
        for s in subs:
            node.destroy_subscription(s)
    n = lambda k: int(float(diag.get(k, 0)))
    sets = max(n('sets.released'), n('sets'))
    per_1000 = lambda v: round(v * 1000.0 / sets, 2) if sets else 0.0
    steady = [r[1] for r in rss if r[0] >= 3.0]
    q = max(1, len(steady) // 4)
    growth = (sum(steady[-q:]) / q - sum(steady[:q]) / q) if len(steady) >= 4 else 0.0
    return {
        'scheduler': scheduler,
        'transport': 'dds',
        'rate': 1.0,
        'sets': sets,
        'published_received': len(latencies),
        'end_to_end_ms': {'p50': pct(latencies, 0.5), 'p99': pct(latencies, 0.99), 'p99_9': pct(latencies, 0.999),
                          'max': round(max(latencies), 2) if latencies else 0.0},
        'target_misses_per_1000': per_1000(n('deadline.target_misses')),
        'hard_misses_per_1000': per_1000(n('deadline.hard_misses')),
        'published_past_hard_deadline': sum(1 for v in latencies if v > 100.0),
        'shed': n('sets.shed'),
        'dropped': {k: v for k, v in diag.items() if k.startswith('dropped.')},
        'degradation_max_level': n('degradation.max_level'),
        'rt': {k: v for k, v in diag.items() if k.startswith('rt.')},
        'fusion_node_rss_mib': {'peak_anon': max((r[1] for r in rss), default=0.0),
                                'peak_total': max((r[2] for r in rss), default=0.0),
                                'anon_growth_first_to_last_quarter': round(growth, 1),
                                'samples_anon_every_500ms': [r[1] for r in rss]},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('bag')
    ap.add_argument('--schedulers', default='edf,fifo')
    a = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node('bench_dds_probe')
    runs = []
    for s in a.schedulers.split(','):
        print(f'bench_dds: {s} over DDS ...', file=sys.stderr)
        runs.append(run(a.bag, s, node))
    out = {'runs': runs}
    by = {r['scheduler']: r for r in runs}
    if 'edf' in by and 'fifo' in by and by['edf']['end_to_end_ms']['p99'] > 0:
        out['fifo_vs_edf'] = {'p99_fifo_over_edf': round(by['fifo']['end_to_end_ms']['p99'] / by['edf']['end_to_end_ms']['p99'], 2),
                              'max_fifo_over_edf': round(by['fifo']['end_to_end_ms']['max'] / max(by['edf']['end_to_end_ms']['max'], 1e-9), 2)}
    print(json.dumps(out))
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()

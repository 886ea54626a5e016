#!/usr/bin/env python3
"""The camera detector on every frame against event-driven (`camera.detector_mode`): every
fusion_sim scenario over unseen seeds through fusion_replay, both modes on the same data.
Reports detector runs per minute, the detector's time summed over the run and the
replay's whole CPU time (the simulator renders the frames in the same process, the same in
both modes), label accuracy and MOTA, and per ground-truth event whether it was caught and how much later. JSON.

    python scripts/eval_detector_gate.py [--scenarios nominal,...] [--seeds 101,102,103]
                                         [--duration 16] [--work DIR]

Binaries from $PATH (source install/local_setup.bash) or target/release.
"""
import argparse
import json
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from eval_scenarios import SCENARIOS, exe  # noqa: E402
from evaluate_replay import evaluate  # noqa: E402

MODES = ['every_frame', 'event_driven']


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def replay(scenario, seed, duration, mode, work, extra):
    params = work / f'{mode}.yaml'
    params.write_text(f'/**:\n  ros__parameters:\n    camera:\n      detector_mode: {mode}\n')
    out = work / f'{scenario}_{seed}_{mode}'
    shutil.rmtree(out, ignore_errors=True)
    before = children_cpu_s()
    subprocess.run([exe('fusion_replay'), '--sim', scenario, '--seed', str(seed), '--duration', str(duration),
                    '--params', str(params), '--out', str(out), *extra], check=True, capture_output=True)
    cpu = children_cpu_s() - before
    metrics = json.loads((out / 'metrics.json').read_text())
    counters = metrics['pipeline']
    frames = counters.get('sets', 0) - counters.get('sets.partial.missing_camera', 0)
    gate = {k.split('.', 2)[2]: v for k, v in counters.items() if k.startswith('detector_gate.ran.')}
    runs = sum(gate.values()) if mode == 'event_driven' else frames
    detector_s = json.loads((out / 'timing.json').read_text())['stages']['detector']['total_s']
    r = evaluate(out, out)
    t = r['tracking']
    return {
        'cpu_s': round(cpu, 2), 'detector_s': detector_s, 'frames': frames, 'detector_runs': runs, 'run_reasons': gate,
        'label_accuracy': t['label_accuracy'], 'labels_matched': t['labels_matched'], 'mota': t['mota'],
        'events': [{'kind': e['kind'], 'detected': e['detected'], 'delay_s': e.get('delay_s')} for e in r['events']],
        'false_alarms': len(r['false_alarms']),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--scenarios', default=','.join(SCENARIOS))
    ap.add_argument('--seeds', default='101,102,103')
    ap.add_argument('--duration', type=float, default=16.0)
    ap.add_argument('--work', type=pathlib.Path)
    ap.add_argument('replay_args', nargs='*', help='more fusion_replay arguments (after --)')
    a = ap.parse_args()
    work = a.work or pathlib.Path(tempfile.mkdtemp(prefix='eval_detector_gate_'))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for scenario in a.scenarios.split(','):
        for seed in [int(s) for s in a.seeds.split(',')]:
            row = {'scenario': scenario, 'seed': seed}
            for mode in MODES:
                row[mode] = replay(scenario, seed, a.duration, mode, work, a.replay_args)
            ef, ed = row['every_frame'], row['event_driven']
            # Per ground-truth event (same data, same order): caught in both, and how much later.
            row['event_changes'] = [
                {'kind': x['kind'], 'every_frame': x['delay_s'], 'event_driven': y['delay_s']}
                for x, y in zip(ef['events'], ed['events'])
                if x['detected'] != y['detected'] or (x['detected'] and abs(x['delay_s'] - y['delay_s']) > 1e-6)
            ]
            rows.append(row)
            print(json.dumps({k: row[k] for k in ('scenario', 'seed', 'event_changes')} | {
                m: {k: row[m][k] for k in ('cpu_s', 'detector_s', 'detector_runs', 'label_accuracy', 'false_alarms')}
                for m in MODES}),
                file=sys.stderr, flush=True)

    def total(mode, key):
        return sum(r[mode][key] for r in rows)

    def accuracy(mode):
        matched = total(mode, 'labels_matched')
        return round(sum(r[mode]['label_accuracy'] * r[mode]['labels_matched'] for r in rows
                         if r[mode]['labels_matched']) / matched, 4) if matched else None

    minutes = len(rows) * a.duration / 60
    delays = [c['event_driven'] - c['every_frame'] for r in rows for c in r['event_changes']
              if c['every_frame'] is not None and c['event_driven'] is not None]
    summary = {
        'seeds': a.seeds, 'duration_s': a.duration, 'runs': len(rows),
        'modes': {m: {'detector_runs_per_min': round(total(m, 'detector_runs') / minutes, 1),
                      'detector_s': round(total(m, 'detector_s'), 1),
                      'cpu_s': round(total(m, 'cpu_s'), 1), 'label_accuracy': accuracy(m),
                      'events_detected': sum(e['detected'] for r in rows for e in r[m]['events']),
                      'false_alarms': total(m, 'false_alarms')} for m in MODES},
        'events_truth': sum(len(r['every_frame']['events']) for r in rows),
        'events_missed_only_event_driven': sum(1 for r in rows for c in r['event_changes'] if c['event_driven'] is None),
        'events_later_s': sorted(round(d, 3) for d in delays if d > 0),
        'events_earlier_s': sorted(round(d, 3) for d in delays if d < 0),
        'rows': rows,
    }
    print(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""Summarizes a recorded run: the last /diagnostics of every node (counters and processing
latency), the message counts of the raw and the recorded bag, and the anomaly summaries.

    python scripts/diag_report.py RAW_BAG RECORDED_BAG [--json]

Prints a table, then one JSON object (the numbers the README and issues quote).
"""
from __future__ import annotations

import argparse
import json
import sys

from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.ROS2_JAZZY)


def counts(path):
    with Reader(path) as r:
        return {c.topic: c.msgcount for c in r.connections}


def last_diagnostics(path):
    last = {}
    with Reader(path) as r:
        conns = [c for c in r.connections if c.topic == '/diagnostics']
        for c, _, raw in r.messages(connections=conns):
            for s in TS.deserialize_cdr(raw, c.msgtype).status:
                # Merged over time: the latency keys of the last window that had any stay (a
                # node reports none for windows without data, e.g. after the bag ended).
                last.setdefault(s.name, {}).update(
                    {'level': int(s.level), 'message': s.message, **{kv.key: kv.value for kv in s.values}})
    return last


def texts(path, topic):
    """The std_msgs/String messages of `topic`, in order."""
    with Reader(path) as r:
        conns = [c for c in r.connections if c.topic == topic]
        return [TS.deserialize_cdr(raw, c.msgtype).data for c, _, raw in r.messages(connections=conns)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('raw')
    ap.add_argument('recorded')
    a = ap.parse_args()
    raw, rec, diag = counts(a.raw), counts(a.recorded), last_diagnostics(a.recorded)
    print(f"{'status':36} {'recv':>6} {'acc':>6} {'rej':>5} {'drop':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, d in sorted(diag.items()):
        print(f"{name:36} {d.get('received', ''):>6} {d.get('accepted', ''):>6} {d.get('rejected', ''):>5} "
              f"{d.get('dropped.queue_full', ''):>5} {d.get('latency_p50_ms', ''):>8} {d.get('latency_p99_ms', ''):>8} "
              f"{d.get('latency_max_ms', ''):>8}")
    for name, d in sorted(diag.items()):
        if 'sets.released' in d:
            g = lambda k: d.get(k, '0')
            print(f"{name}: sets released {g('sets.released')}, published {g('sets.published')}, "
                  f"shed {g('sets.shed')}, target misses {g('deadline.target_misses')}, "
                  f"hard misses {g('deadline.hard_misses')}, degradation max level {g('degradation.max_level')}, "
                  f"detector p50/p99 {d.get('stage.detector.p50_ms', '-')}/{d.get('stage.detector.p99_ms', '-')} ms, "
                  f"RT {d.get('rt.fusion', '-')}")
    print('raw bag:      ' + ', '.join(f'{k}={v}' for k, v in sorted(raw.items())))
    print('recorded bag: ' + ', '.join(f'{k}={v}' for k, v in sorted(rec.items())))
    summaries = texts(a.recorded, '/anomaly/summary')
    for text in summaries:
        print(f'summary: {text}')
    print(json.dumps({'raw_counts': raw, 'recorded_counts': rec, 'diagnostics': diag, 'summaries': summaries},
                     sort_keys=True))
    return 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python3
"""Random event bursts for the summary benchmark, drawn apart from both our simulator and the
hand-made edge cases (scripts/summary_edge_cases.py): a `fusion_replay` events.jsonl whose
bursts nothing in the summarizer's prompt, worked examples or verifier was shaped around.

What is random (seeded `random.Random`): burst sizes (1-6) and kind mixes; every number, drawn
over ranges a robot may report but our scenarios never produce (tracks 1-60000, distances
0.2-80 m, time to collision 0.05-2 s, closing speeds up to 45 m/s, dropouts from 0.2 s to an
hour, shocks up to 30 g); zone names from a user's own calibration (`loading_dock`,
`rear_left`, ...); object labels including `unknown`; sensor subsets; part or all of an
event's evidence missing; and the clock: half the file's bursts carry run-time stamps, half
wall-clock stamps from a random day of 2027 on (so their times read as UTC time of day). What is fixed is only the event schema the pipeline
publishes (kinds, rules, evidence keys, units), as `fusion::anomaly` writes it.

    python scripts/summary_random_bursts.py OUT/events.jsonl [--bursts 60] [--seed 1]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

INFO, WARN, ERROR = 0, 1, 2
SEC = 1_000_000_000
G = 9.80665
ZONES = ['forward', 'loading_dock', 'rear_left', 'rear_right', 'walkway', 'crossing_b']
LABELS = ['person', 'vehicle', 'obstacle', 'unknown']
SENSORS = ['camera', 'lidar', 'radar']
RATES = {'camera': 30, 'lidar': 10, 'radar': 20, 'imu': 200}


def f2(x: float) -> str:
    return f'{x:.2f}'


class Draw:
    def __init__(self, rng: random.Random):
        self.r = rng

    def ev(self, kind, rule, measured, threshold, sensors, severity, tracks=(), zone='', position=(0.0, 0.0, 0.0),
           evidence=()):
        evidence = list(evidence)
        # One event in eight comes with part or all of its evidence missing (another publisher,
        # an older node).
        if evidence and self.r.random() < 0.125:
            evidence = self.r.sample(evidence, self.r.randrange(len(evidence)))
        return dict(kind=kind, rule=rule, measured_value=measured, threshold=threshold, sensors=list(sensors),
                    severity=severity, track_ids=list(tracks), zone=zone, position=list(position),
                    evidence=[dict(key=k, value=v) for k, v in evidence])

    def track(self) -> int:
        return self.r.choice([self.r.randint(1, 40), self.r.randint(100, 60000)])

    def seen_by(self):
        return sorted(self.r.sample(SENSORS, self.r.randint(1, 3)), key=SENSORS.index)

    def zone_intrusion(self):
        x, y = self.r.uniform(0.2, 12.0), self.r.uniform(-3.0, 3.0)
        d = math.hypot(x, y)
        ev = [('label', self.r.choice(LABELS)), ('x_m', f2(x)), ('y_m', f2(y)),
              ('rel_vx_mps', f2(self.r.uniform(-6, 2))), ('rel_vy_mps', f2(self.r.uniform(-2, 2))),
              ('distance_m', f2(d)), ('zone_depth_m', f2(self.r.uniform(0.01, 3.0)))]
        return self.ev('zone_intrusion', 'track_inside_zone', d, 0.0, self.seen_by(), WARN, [self.track()],
                       self.r.choice(ZONES), (x, y, self.r.uniform(0.2, 2.0)), ev)

    def collision_risk(self):
        x, y = self.r.uniform(0.5, 80.0), self.r.uniform(-2.0, 2.0)
        ttc = self.r.uniform(0.05, 2.0)
        # Range over time to collision where that is a speed a robot meets, else any closing speed.
        closing = x / ttc if x / ttc <= 45.0 and self.r.random() < 0.7 else self.r.uniform(0.5, 45.0)
        ev = [('label', self.r.choice(LABELS)), ('x_m', f2(x)), ('y_m', f2(y)), ('rel_vx_mps', f2(-closing)),
              ('rel_vy_mps', f2(self.r.uniform(-1, 1))), ('ttc_s', f2(ttc)), ('closing_speed_mps', f2(closing))]
        return self.ev('collision_risk', 'ttc_below_threshold', ttc, 2.0, self.seen_by(),
                       ERROR if ttc < 1.0 else WARN, [self.track()], '', (x, y, 0.5), ev)

    def dropout(self):
        sensor = self.r.choice(list(RATES))
        silent = self.r.choice([self.r.uniform(0.2, 3.0), self.r.uniform(3.0, 3600.0)])
        rate = RATES[sensor]
        if self.r.random() < 0.3:
            return self.ev('sensor_dropout', 'stream_recovered', silent * rate, 5.0, [sensor], INFO,
                           evidence=[('silent_s', f'{silent:.3f}'),
                                     ('last_message_stamp_s', f'{self.r.uniform(0, 500):.3f}')])
        return self.ev('sensor_dropout', 'stream_silent', silent * rate, 5.0, [sensor], ERROR,
                       evidence=[('silent_s', f'{silent:.3f}'), ('expected_rate_hz', str(rate)),
                                 ('last_message_stamp_s', f'{self.r.uniform(0, 500):.3f}')])

    def degraded(self):
        rule = self.r.choice(['image_blinded', 'image_frozen', 'cloud_non_finite', 'imu_saturated'])
        if rule == 'image_blinded':
            dark = self.r.random() < 0.5
            mean = self.r.uniform(0.0, 9.9) if dark else self.r.uniform(245.1, 255.0)
            return self.ev('sensor_degraded', rule, mean, 10.0 if dark else 245.0, ['camera'], ERROR,
                           evidence=[('mean_luma', f'{mean:.1f}'), ('luma_std', f'{self.r.uniform(0, 4):.1f}'),
                                     ('identical_frames', str(self.r.randint(0, 9))),
                                     ('blinded_frames', str(self.r.randint(3, 400)))])
        if rule == 'image_frozen':
            n = self.r.randint(10, 900)
            return self.ev('sensor_degraded', rule, float(n), 10.0, ['camera'], ERROR,
                           evidence=[('mean_luma', f'{self.r.uniform(20, 230):.1f}'),
                                     ('luma_std', f'{self.r.uniform(5, 80):.1f}'), ('identical_frames', str(n)),
                                     ('blinded_frames', '0')])
        if rule == 'cloud_non_finite':
            total = self.r.choice([16384, 28800, 65536, 131072])
            bad = self.r.randint(int(0.21 * total), total)
            return self.ev('sensor_degraded', rule, bad / total, 0.2, ['lidar'], WARN,
                           evidence=[('non_finite_points', str(bad)), ('points', str(total))])
        peak = self.r.uniform(157.0, 400.0)
        return self.ev('sensor_degraded', rule, peak, 156.9, ['imu'], WARN,
                       evidence=[('peak_axis_accel', f'{peak:.1f}')])

    def impact(self):
        g = self.r.uniform(3.01, 30.0)
        a = g * G
        bearing = self.r.choice([0, 45, 90, 135, 180, 225, 270, 315])
        ax, ay = -a * math.cos(math.radians(bearing)), -a * math.sin(math.radians(bearing))
        return self.ev('impact', 'shock_above_threshold', a, 29.4, ['imu'], ERROR,
                       evidence=[('shock_g', f2(g)), ('accel_x', f2(ax)), ('accel_y', f2(ay)), ('accel_z', '9.81'),
                                 ('direction_deg', str(bearing))])

    def disagreement(self):
        frames = self.r.randint(5, 120)
        if self.r.random() < 0.5:
            x, y = self.r.uniform(2, 60), self.r.uniform(-8, 8)
            return self.ev('sensor_disagreement', 'camera_misses_lidar_radar_object', float(frames), 5.0,
                           ['camera', 'lidar', 'radar'], WARN, [self.track()], '', (x, y, 0.0),
                           [('missed_camera_frames', str(frames)), ('range_m', f'{math.hypot(x, y):.1f}')])
        u, v = self.r.randint(0, 560), self.r.randint(0, 400)
        box = f'{u},{v},{u + self.r.randint(8, 80)},{v + self.r.randint(8, 80)}'
        return self.ev('sensor_disagreement', 'lidar_radar_miss_camera_object', float(frames), 5.0,
                       ['camera', 'lidar', 'radar'], WARN,
                       evidence=[('unconfirmed_camera_frames', str(frames)), ('image_box', box)])

    def overrun(self):
        window = self.r.choice([50, 100, 200])
        misses = self.r.randint(int(0.051 * window) + 1, window)
        return self.ev('deadline_overrun', 'hard_miss_ratio', misses / window, 0.05, ['camera', 'lidar', 'radar'],
                       WARN, evidence=[('hard_misses', str(misses)), ('window_sets', str(window)),
                                       ('hard_deadline_ms', self.r.choice(['50', '66.7', '80', '100', '150']))])

    def model_degraded(self):
        rule = self.r.choice(['input_outside_training_range', 'camera_lidar_agreement_low'])
        if rule == 'input_outside_training_range':
            share = self.r.uniform(0.51, 1.0)
            return self.ev('model_degraded', rule, share, 0.5, ['camera'], WARN,
                           evidence=[('window_frames', '50'),
                                     ('last_out_of_range_stat', self.r.choice(['mean_luma', 'luma_std', 'saturation'])),
                                     ('camera_lidar_agreement', f2(self.r.uniform(0.2, 1.0)))])
        agreement = self.r.uniform(0.0, 0.49)
        return self.ev('model_degraded', rule, agreement, 0.5, ['camera'], WARN,
                       evidence=[('window_frames', '50'), ('camera_lidar_agreement', f2(agreement))])

    def time_jump(self):
        jump = self.r.uniform(1.01, 900.0)
        before = self.r.uniform(0.0, 500.0)
        if self.r.random() < 0.5:
            return self.ev('time_jump', 'data_time_went_forward', jump, 1.0, [self.r.choice(SENSORS)], INFO,
                           evidence=[('jump_forward_s', f'{jump:.3f}'), ('previous_time_s', f'{before:.3f}'),
                                     ('new_time_s', f'{before + jump:.3f}')])
        return self.ev('time_jump', 'data_time_went_back', jump, 1.0, [self.r.choice(SENSORS)], INFO,
                       evidence=[('jump_back_s', f'{jump:.3f}'), ('previous_time_s', f'{before + jump:.3f}'),
                                 ('new_time_s', f'{before:.3f}')])

    def event(self):
        # Weighted toward what a robot reports most (intrusions, risks, dropouts).
        make = self.r.choices(
            [self.zone_intrusion, self.collision_risk, self.dropout, self.degraded, self.impact, self.disagreement,
             self.overrun, self.model_degraded, self.time_jump], weights=[5, 5, 3, 2, 1, 2, 1, 1, 1])[0]
        return make()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('out', type=Path)
    ap.add_argument('--bursts', type=int, default=60)
    ap.add_argument('--seed', type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    draw = Draw(rng)
    lines, event_id = [], 0
    run_time = rng.uniform(2.0, 30.0) * SEC
    # Wall-clock bursts on one random day of 2027 (a robot's own clock), after every run-time one.
    day = (1_798_761_600 + rng.randrange(365) * 86_400) * SEC
    wall = day + rng.uniform(0, 20 * 3600) * SEC
    for b in range(a.bursts):
        size = rng.choices([1, 2, 3, 4, 5, 6], weights=[8, 5, 3, 2, 1, 1])[0]
        if b < a.bursts // 2:
            run_time += rng.uniform(5.0, 40.0) * SEC
            base = int(run_time)
        else:
            wall += rng.uniform(5.0, 600.0) * SEC
            base = int(wall)
        # Events of a burst within 0.6 s, bursts > 4 s apart: the 1 s coalescing window keeps
        # them as drawn here.
        for i in range(size):
            event_id += 1
            stamp = base + int(i * rng.uniform(0.02, 0.1) * SEC)
            onset = stamp - int(rng.uniform(0.0, 2.0) * SEC)
            lines.append(json.dumps(dict(event_id=event_id, stamp_ns=stamp, onset_ns=onset, **draw.event())))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text('\n'.join(lines) + '\n')
    print(f'{a.out}: {a.bursts} bursts, {event_id} events', file=sys.stderr)


if __name__ == '__main__':
    main()

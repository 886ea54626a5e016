#!/usr/bin/env python3
"""Hand-made event bursts for the summary benchmark (fusion_bench_summaries), written as a
fusion_replay `events.jsonl`: one event of every kind and rule, evidence missing, big and tiny
numbers, a wall-clock stamp, and bursts of 2-8 mixed kinds. Bursts are 10 s apart and their
events within 0.6 s, so the summarizer's 1 s coalescing window groups them as written here.

    python scripts/summary_edge_cases.py models/bench/summary_edge_cases/events.jsonl
"""
import json
import sys
from pathlib import Path

INFO, WARN, ERROR = 0, 1, 2
SEC = 1_000_000_000


def ev(kind, rule, measured, threshold, sensors, severity=WARN, tracks=(), zone='', position=(0.0, 0.0, 0.0),
       evidence=()):
    return dict(kind=kind, rule=rule, measured_value=measured, threshold=threshold, sensors=list(sensors),
                severity=severity, track_ids=list(tracks), zone=zone, position=list(position),
                evidence=[dict(key=k, value=v) for k, v in evidence])


def zone(label='person', track=7, x=3.1, y=0.5, sensors=('lidar', 'radar', 'camera'), evidence=None):
    d = (x * x + y * y) ** 0.5
    evidence = evidence if evidence is not None else [
        ('label', label), ('x_m', f'{x:.2f}'), ('y_m', f'{y:.2f}'), ('rel_vx_mps', '-0.40'), ('rel_vy_mps', '0.10'),
        ('distance_m', f'{d:.2f}'), ('zone_depth_m', '0.62')]
    return ev('zone_intrusion', 'track_inside_zone', d, 0.0, sensors, WARN, [track], 'forward', (x, y, 0.9), evidence)


def risk(label='vehicle', track=4, x=9.0, ttc=1.2, closing=6.5, sensors=('lidar', 'radar'), evidence=None):
    evidence = evidence if evidence is not None else [
        ('label', label), ('x_m', f'{x:.2f}'), ('y_m', '0.10'), ('rel_vx_mps', f'{-closing:.2f}'), ('rel_vy_mps', '0.00'),
        ('ttc_s', f'{ttc:.2f}'), ('closing_speed_mps', f'{closing:.2f}')]
    return ev('collision_risk', 'ttc_below_threshold', ttc, 2.0, sensors, ERROR if ttc < 1.0 else WARN, [track], '',
              (x, 0.1, 0.8), evidence)


def dropout(sensor='lidar', silent=0.75, rate=10, evidence=None):
    evidence = evidence if evidence is not None else [
        ('silent_s', f'{silent:.3f}'), ('expected_rate_hz', str(rate)), ('last_message_stamp_s', '4.100')]
    return ev('sensor_dropout', 'stream_silent', silent * rate, 5.0, [sensor], ERROR, evidence=evidence)


def blinded(mean=3.2):
    return ev('sensor_degraded', 'image_blinded', mean, 10.0 if mean < 128 else 245.0, ['camera'], ERROR,
              evidence=[('mean_luma', f'{mean:.1f}'), ('luma_std', '1.1'), ('identical_frames', '1'),
                        ('blinded_frames', '3')])


def frozen():
    return ev('sensor_degraded', 'image_frozen', 10.0, 10.0, ['camera'], ERROR,
              evidence=[('mean_luma', '96.3'), ('luma_std', '41.0'), ('identical_frames', '10'), ('blinded_frames', '0')])


def non_finite():
    return ev('sensor_degraded', 'cloud_non_finite', 0.34, 0.2, ['lidar'], WARN,
              evidence=[('non_finite_points', '11142'), ('points', '32768')])


def saturated(peak=156.9):
    return ev('sensor_degraded', 'imu_saturated', peak, 156.9, ['imu'], WARN, evidence=[('peak_axis_accel', f'{peak:.1f}')])


def impact(g=4.8, evidence=None):
    a = g * 9.80665
    evidence = evidence if evidence is not None else [
        ('shock_g', f'{g:.2f}'), ('accel_x', f'{-a:.2f}'), ('accel_y', '0.40'), ('accel_z', '9.90'), ('direction_deg', '180')]
    return ev('impact', 'shock_above_threshold', a, 29.4, ['imu'], ERROR, evidence=evidence)


def camera_misses(track=5, frames=5):
    return ev('sensor_disagreement', 'camera_misses_lidar_radar_object', frames, 5.0, ['camera', 'lidar', 'radar'],
              WARN, [track], '', (7.9, -1.2, 0.0), [('missed_camera_frames', str(frames)), ('range_m', '8.0')])


def phantom(frames=5):
    return ev('sensor_disagreement', 'lidar_radar_miss_camera_object', frames, 5.0, ['camera', 'lidar', 'radar'],
              WARN, evidence=[('unconfirmed_camera_frames', str(frames)), ('image_box', '402,211,448,263')])


def overrun():
    return ev('deadline_overrun', 'hard_miss_ratio', 0.12, 0.05, ['camera', 'lidar', 'radar'], WARN,
              evidence=[('hard_misses', '12'), ('window_sets', '100'), ('hard_deadline_ms', '100')])


def out_of_range():
    return ev('model_degraded', 'input_outside_training_range', 0.62, 0.5, ['camera'], WARN,
              evidence=[('window_frames', '50'), ('last_out_of_range_stat', 'mean_luma'),
                        ('camera_lidar_agreement', '0.71')])


def detector_unavailable():
    return ev('model_degraded', 'detector_unavailable', 0.0, 0.0, ['camera'], ERROR,
              evidence=[('error', 'camera detector from /opt/models/detector.json: weights sha256 is 3f2a..., expected 868f...')])


def recovered(sensor='lidar', silent=2.4):
    return ev('sensor_dropout', 'stream_recovered', silent * 10, 5.0, [sensor], INFO,
              evidence=[('silent_s', f'{silent:.3f}'), ('last_message_stamp_s', '4.100')])


def time_jump():
    return ev('time_jump', 'data_time_went_back', 12.402, 1.0, ['lidar'], INFO,
              evidence=[('jump_back_s', '12.402'), ('previous_time_s', '17.402'), ('new_time_s', '5.000')])


def time_jump_forward():
    return ev('time_jump', 'data_time_went_forward', 22.098, 1.0, ['lidar'], INFO,
              evidence=[('jump_forward_s', '22.098'), ('previous_time_s', '7.902'), ('new_time_s', '30.000')])


def low_agreement():
    return ev('model_degraded', 'camera_lidar_agreement_low', 0.31, 0.5, ['camera'], WARN,
              evidence=[('window_frames', '50'), ('camera_lidar_agreement', '0.31')])


BURSTS = [
    # One event of each kind and rule.
    [zone()], [risk()], [dropout()], [blinded()], [blinded(252.7)], [frozen()], [non_finite()], [saturated(160.2)],
    [impact()], [camera_misses()], [phantom()], [overrun()], [out_of_range()], [low_agreement()], [detector_unavailable()],
    [time_jump()], [recovered()], [dropout('radar', 0.5, 20), recovered('camera', 0.7)],
    [zone('obstacle', 12, 2.4, -0.3)], [risk('person', 9, 5.2, 1.6, 2.1)],
    [dropout('camera', 0.4, 30)], [dropout('radar', 0.9, 20)], [dropout('imu', 0.05, 200)],
    # Evidence missing.
    [zone(evidence=[])], [risk(evidence=[('label', 'vehicle')])], [dropout(evidence=[])], [impact(evidence=[])],
    [zone(sensors=())],
    # Big and tiny numbers.
    [zone('person', 3, 0.04, 0.01)], [risk('vehicle', 21, 187.3, 0.05, 3746.0)], [dropout('lidar', 3600.0)],
    [impact(15.3)], [zone('vehicle', 100000, 49.75, -12.25)],
    # Bursts of 2-8 mixed kinds.
    [phantom(), zone('person', 2, 3.6, 0.4)],
    [zone('vehicle', 4, 4.1, 0.2), risk('vehicle', 4, 4.1, 0.9, 4.5)],
    [dropout('camera', 0.4, 30), dropout('lidar', 0.6), dropout('radar', 0.5, 20)],
    [impact(6.1), saturated(158.0)],
    [zone('person', 2, 3.6, 0.4), zone('vehicle', 8, 4.4, -0.6)],
    [zone(), risk(), camera_misses(), blinded()],
    [dropout('lidar', 0.8), zone('obstacle', 11, 2.2, 0.1), risk('obstacle', 11, 2.2, 0.5, 3.9), non_finite(),
     overrun()],
    [impact(), saturated(), frozen(), camera_misses(6, 7), phantom(), out_of_range()],
    [zone(), risk(), dropout('radar', 0.5, 20), blinded(), impact(), camera_misses(), overrun()],
    [zone(), risk('person', 7, 3.1, 0.7, 4.0), dropout('radar', 0.5, 20), frozen(), impact(), phantom(), overrun(),
     low_agreement()],
    [time_jump_forward()],
    # Last, with a wall-clock (epoch) stamp as a robot's own clock gives (later than every
    # run-time stamp above, so coalescing by time keeps it apart).
    [zone('person', 7, 2.9, -0.4), risk('person', 7, 2.9, 0.6, 4.2)],
]


def main(out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    lines, event_id = [], 0
    for b, burst in enumerate(BURSTS):
        base = 1_764_687_600 * SEC if b == len(BURSTS) - 1 else (b * 10 + 5) * SEC
        for i, e in enumerate(burst):
            event_id += 1
            stamp = base + i * 80_000_000
            lines.append(json.dumps(dict(event_id=event_id, stamp_ns=stamp, onset_ns=stamp - 200_000_000, **e)))
    out.write_text('\n'.join(lines) + '\n')
    print(f'{out}: {len(BURSTS)} bursts, {event_id} events', file=sys.stderr)


if __name__ == '__main__':
    main(Path(sys.argv[1] if len(sys.argv) > 1 else 'models/bench/summary_edge_cases/events.jsonl'))

"""Fusion core acceptance on fusion_sim scenarios: fusion_replay's events against the
ground truth (recall, false alarms, detection delay), tracking MOTA, determinism across
replay speeds, and the launched node set over real DDS publishing /anomaly/events."""
from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SCENARIO_SEED, binary, child_env, simulate
from test_launch import launch_env, launcher

sys.path.insert(0, str(ROOT / 'scripts'))
from evaluate_replay import evaluate  # noqa: E402

# Seeds here are used by no other test (and never for tuning).
SEED = SCENARIO_SEED
ANOMALY_SCENARIOS = {'pedestrian_intrusion': 12, 'collision_course': 12, 'camera_blackout': 12, 'lidar_dropout': 12,
                     'imu_impact': 12, 'sensor_disagreement': 12, 'mixed': 20}


def replay(bag, out, *extra):
    res = subprocess.run([binary('fusion_replay'), str(bag), '--out', str(out), *extra], capture_output=True, text=True,
                         env=child_env(), timeout=900)
    assert res.returncode == 0, res.stderr
    return out


def test_events_against_ground_truth(tmp_path):
    # Streamed from the simulator into the pipeline in process: the outputs of the bag
    # fusion_sim would write, replayed (test_a_streamed_simulation_equals_its_replayed_bag),
    # without writing and reading 1.2 GB of MCAP. The bag path is the DDS tests' and that one's.
    results = []
    for name, duration in ANOMALY_SCENARIOS.items():
        out = replay_sim(name, SCENARIO_SEED, duration, tmp_path / name)
        r = evaluate(out, out)
        results += [dict(e, scenario=name) for e in r['events']]
        assert not r['false_alarms'], f'{name}: {r["false_alarms"]}'
    # The shipped pipeline runs the Burn detector (models/weights), so the camera-side
    # sensor_disagreement (the camera-invisible obstacles) is scored like the rest.
    scored = results
    kinds = {e['kind'] for e in scored}
    assert kinds == {'zone_intrusion', 'collision_risk', 'sensor_degraded', 'sensor_dropout', 'impact',
                     'sensor_disagreement'}, kinds
    recall = sum(e['detected'] for e in scored) / len(scored)
    delays = [e['delay_s'] for e in scored if e['detected']]
    print(json.dumps({'recall': recall, 'median_delay_s': statistics.median(delays), 'events': scored}, indent=1))
    assert recall >= 0.95, [e for e in scored if not e['detected']]
    assert statistics.median(delays) <= 0.2, delays


@pytest.mark.parametrize('minutes', [2, pytest.param(10, marks=pytest.mark.long)])
def test_minutes_of_nominal_false_alarms_and_mota(minutes, tmp_path):
    # Ten minutes of 640x480 camera would be a 17 GB MCAP file: the run is streamed into the
    # pipeline in process (fusion_replay --sim: the messages fusion_sim would write, so the
    # same outputs, see test_a_streamed_simulation_equals_its_replayed_bag) and the ground
    # truth lands beside the outputs. The ten-minute run is in `make test-long` (146 s on 2
    # cores, 2026-12-07; 12 min before the renderer culled boxes behind the camera); `make
    # test` runs the first two minutes (32 s), which hold every actor of the nominal world.
    out = replay_sim('nominal', SEED, minutes * 60, tmp_path / 'nominal', '--report', str(tmp_path / 'report.html'))
    # The run's HTML report: issue 23 asks ≤ 10 s for a ten-minute run.
    written = re.search(r'report written to .* in ([0-9.]+) s', (out / 'replay.log').read_text())
    assert written and float(written.group(1)) <= 10.0, written
    r = evaluate(out, out)
    assert len(r['false_alarms']) <= 1, r['false_alarms']
    t = r['tracking']
    print(json.dumps(t))
    # Measured 0.772 (356 objects, 77 misses, 2 false positives) on the domain-randomised world,
    # whose thin bodies (barrier legs, cones, children) give LiDAR fewer returns than the boxes
    # did (0.921 then): an actor with any return counts as a target.
    assert t['gt_objects'] > 300 and t['mota'] >= 0.75, t
    # The ego speed from the radar's Doppler (no odometry in the bag) against the true speed:
    # measured 1199 of 1200 sets, p95 error 0.095 m/s. Ground velocities of matched objects
    # (relative + ego): p50 0.16 m/s (a fresh track's filter velocity is still a guess).
    ego = t['ego_speed_error']
    assert ego['estimated'] >= 0.95 * ego['of'] and ego['p95'] <= 0.2, ego
    assert t['ground_velocity_error']['p50'] <= 0.3, t['ground_velocity_error']
    # Labels weighed by motion (a moving thing is no obstacle): measured 0.968.
    assert t['label_accuracy'] >= 0.95, t


def replay_sim(scenario, seed, duration, out, *extra):
    res = subprocess.run([binary('fusion_replay'), '--sim', scenario, '--seed', str(seed), '--duration', str(duration),
                          '--out', str(out), *extra], capture_output=True, text=True, env=child_env(), timeout=1500)
    assert res.returncode == 0, res.stderr
    (out / 'replay.log').write_text(res.stderr)
    return out


def test_a_streamed_simulation_equals_its_replayed_bag(scenario_bags, tmp_path):
    bag = scenario_bags('mixed', 20)
    from_bag = replay(bag, tmp_path / 'bag')
    streamed = replay_sim('mixed', SEED, 20, tmp_path / 'streamed')
    for name in ('events.jsonl', 'objects.jsonl'):
        assert (from_bag / name).read_bytes() == (streamed / name).read_bytes(), name
    assert (bag / 'ground_truth.jsonl').read_bytes() == (streamed / 'ground_truth.jsonl').read_bytes()
    metrics = [json.loads((d / 'metrics.json').read_text()) for d in (from_bag, streamed)]
    assert metrics[1].pop('bag') == 'sim:mixed:23:20'
    metrics[0].pop('bag')
    assert metrics[0] == metrics[1]
    assert metrics[1]['sets'] > 150 and metrics[1]['events'] >= 5, metrics[1]


def test_odometry_gives_velocities_over_the_ground_in_the_odometry_frame(tmp_path):
    """nav_msgs/Odometry in (issue 19): the ego's speed comes from it, every object's
    velocity over the ground is also published in the odometry frame, and the sweep is
    deskewed with the ego's translation. Scored against the simulator's truth: the actors'
    world velocities (the simulator's world is the odometry frame). Without odometry the
    outputs are those of a run that never had the topic."""
    from rosbags.highlevel import AnyReader

    # The bag's /odom as an independent reader (rosbags, Jazzy's nav_msgs) reads it.
    bag = simulate(tmp_path / 'bag', 'mixed', SEED, 2.0, '--odometry')
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == '/odom']
        assert [c.msgtype for c in conns] == ['nav_msgs/msg/Odometry']
        odom = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    assert len(odom) == 100 and {(m.header.frame_id, m.child_frame_id) for m in odom} == {('odom', 'base_link')}
    truth = {r['stamp_ns']: r['ego'] for r in map(json.loads, (bag / 'ground_truth.jsonl').read_text().splitlines())
             if r['type'] == 'frame'}
    stamped = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in odom}
    common = sorted(set(truth) & set(stamped))
    assert len(common) == 20
    for t in common:
        m, ego = stamped[t], truth[t]
        assert abs(m.twist.twist.linear.x - ego['speed']) < 0.15 and abs(m.pose.pose.position.x - ego['x']) < 1e-6

    with_odometry = replay_sim('mixed', SEED, 12, tmp_path / 'odometry', '--odometry')
    r = evaluate(with_odometry, with_odometry)['tracking']
    print(json.dumps({k: r[k] for k in ('ego_speed_error', 'ground_velocity_error', 'odom_velocity_error')}))
    sets = [json.loads(line) for line in (with_odometry / 'objects.jsonl').read_text().splitlines()]
    assert sets and all(s['odom_frame'] == 'odom' for s in sets)
    # The odometry frame's velocity is the ground velocity turned by the ego's heading (the
    # simulator's odometry pose is the true one; the ego turns left by up to 0.2 rad here).
    yaws = {r['stamp_ns']: r['ego']['yaw'] for r in map(json.loads, (with_odometry / 'ground_truth.jsonl').read_text()
                                                          .splitlines()) if r['type'] == 'frame'}
    turned = [(yaws[s['stamp_ns']], o) for s in sets for o in s['objects'] if s['stamp_ns'] in yaws]
    assert len(turned) > 300 and max(yaw for yaw, _ in turned) > 0.1
    for yaw, o in turned:
        (gx, gy), (vx, vy) = o['ground_velocity'], o['odom_velocity']
        expected = (math.cos(yaw) * gx - math.sin(yaw) * gy, math.sin(yaw) * gx + math.cos(yaw) * gy)
        assert math.hypot(vx - expected[0], vy - expected[1]) < 1e-3 * (1 + math.hypot(gx, gy)), (yaw, o)
    # Every matched object has a velocity in the odometry frame; their median error against
    # the truth is within 0.3 m/s (a fresh track's filter velocity is still a guess, so not
    # every one is). The odometry's speed is noisy by 0.03 m/s, far better than the radar's.
    odom_error, ego = r['odom_velocity_error'], r['ego_speed_error']
    assert odom_error['of'] > 150 and odom_error['estimated'] == odom_error['of'], odom_error
    assert odom_error['p50'] <= 0.3 and odom_error['within_0_3'] >= 0.6, odom_error
    assert ego['estimated'] == ego['of'] and ego['p95'] <= 0.08, ego
    metrics = json.loads((with_odometry / 'metrics.json').read_text())
    assert metrics['frontend']['odometry.accepted'] == 600, metrics['frontend']
    assert metrics['pipeline']['ego_speed.from_odometry'] == metrics['sets'], metrics['pipeline']

    # The topic ignored, and a run without it: the same outputs, none of them in odom.
    ignored = replay_sim('mixed', SEED, 12, tmp_path / 'ignored', '--odometry', '--odom-topic', '/none')
    without = replay_sim('mixed', SEED, 12, tmp_path / 'without')
    assert outputs(ignored) == outputs(without)
    assert 'odom' not in (without / 'objects.jsonl').read_text()
    radar = evaluate(without, without)['tracking']['ego_speed_error']
    assert radar['p50'] > ego['p50'], (radar, ego)

    # A robot without an IMU: odometry's headings turn the tracks with the ego instead. Its
    # objects' ground velocities: p50 0.20 m/s, 72 % within 0.3 (0.40 and 35 % without it).
    no_imu = [evaluate(d, d)['tracking']['ground_velocity_error'] for d in (
        replay_sim('mixed', SEED, 12, tmp_path / 'no_imu_odometry', '--odometry', '--imu-topic', '/none'),
        replay_sim('mixed', SEED, 12, tmp_path / 'no_imu', '--imu-topic', '/none'))]
    assert no_imu[0]['p50'] <= 0.3 and no_imu[0]['within_0_3'] >= no_imu[1]['within_0_3'] + 0.2, no_imu


def test_an_event_driven_detector_runs_less_and_misses_nothing(tmp_path):
    """`camera.detector_mode: event_driven` (issue 22): on the mixed scenario, which stages
    every event kind including a camera/LiDAR disagreement, the detector runs on far fewer
    frames, says why it ran, and every ground-truth event is still caught, no later than one
    set period (0.1 s) after the every-frame run, with the same labels within 0.05."""
    runs = {}
    for mode in ('every_frame', 'event_driven'):
        params = tmp_path / f'{mode}.yaml'
        params.write_text(f'/**:\n  ros__parameters:\n    camera:\n      detector_mode: {mode}\n')
        out = replay_sim('mixed', SEED, 20, tmp_path / mode, '--params', str(params))
        counters = json.loads((out / 'metrics.json').read_text())['pipeline']
        runs[mode] = (counters, evaluate(out, out))
    (every, every_r), (driven, driven_r) = runs['every_frame'], runs['event_driven']
    frames = every['sets'] - every.get('sets.partial.missing_camera', 0)
    reasons = {k.rsplit('.', 1)[1]: v for k, v in driven.items() if k.startswith('detector_gate.ran.')}
    ran = sum(reasons.values())
    print(json.dumps({'frames': frames, 'event_driven_runs': ran, 'reasons': reasons}))
    assert not any(k.startswith('detector_gate.') for k in every), 'every_frame counts nothing new'
    assert ran + driven['detector_gate.skipped'] == frames
    assert ran <= 0.7 * frames, reasons  # measured 104 of 180 (0.58)
    assert reasons.get('object_unanswered', 0) + reasons.get('camera_unexplained', 0) > 0, reasons
    assert len(driven_r['events']) == len(every_r['events']) >= 5
    for a, b in zip(every_r['events'], driven_r['events']):
        assert b['detected'] or not a['detected'], (a, b)
        if a['detected']:
            assert b['delay_s'] <= a['delay_s'] + 0.1 + 1e-6, (a, b)
    assert len(driven_r['false_alarms']) <= len(every_r['false_alarms'])
    labels = [r['tracking']['label_accuracy'] for r in (every_r, driven_r)]
    assert labels[1] >= labels[0] - 0.05, labels


def test_replay_preprocesses_with_the_robots_ingest_params(tmp_path):
    """`fusion_replay --ingest-params FILE` filters as the ingest nodes given FILE do: the
    shipped config/ingest.yaml gives the default replay byte for byte, and a radar min_rcs
    above every target leaves no object that radar observed."""
    shipped_file = ROOT / 'config' / 'ingest.yaml'
    default = replay_sim('pedestrian_intrusion', SEED, 6, tmp_path / 'default')
    shipped = replay_sim('pedestrian_intrusion', SEED, 6, tmp_path / 'shipped', '--ingest-params', str(shipped_file))
    assert digest(default) == digest(shipped)
    tuned_file = tmp_path / 'ingest.yaml'
    tuned_file.write_text(shipped_file.read_text().replace('min_rcs: -20.0', 'min_rcs: 1000.0'))
    assert tuned_file.read_text() != shipped_file.read_text()
    tuned = replay_sim('pedestrian_intrusion', SEED, 6, tmp_path / 'tuned', '--ingest-params', str(tuned_file))

    def observed_by_radar(out):
        return sum(bool(o['sensors'] & 4) for line in (out / 'objects.jsonl').read_text().splitlines()
                   for o in json.loads(line)['objects'])
    assert observed_by_radar(default) > 0 and observed_by_radar(tuned) == 0, (observed_by_radar(default),
                                                                              observed_by_radar(tuned))


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in ('events.jsonl', 'objects.jsonl', 'metrics.json'):
        h.update((out / f).read_bytes())
    return h.hexdigest()


def test_replay_is_byte_identical_at_any_speed(scenario_bags, tmp_path):
    bag = scenario_bags('mixed', 20)
    runs = [replay(bag, tmp_path / 'fast'),
            replay(bag, tmp_path / 'x4', '--realtime', '--rate', '4'),
            replay(bag, tmp_path / 'x10', '--realtime', '--rate', '10')]
    assert len({digest(r) for r in runs}) == 1
    timing = json.loads((runs[1] / 'timing.json').read_text())
    assert 4.0 <= timing['wall_s'] <= 8.0, timing  # 20 s of data at 4x really took ~5 s
    events = [json.loads(line) for line in (runs[0] / 'events.jsonl').read_text().splitlines()]
    assert len(events) >= 5 and all(e['evidence'] and e['rule'] and e['sensors'] for e in events)


def outputs(out: Path) -> str:
    """What a replay published: its events and objects, not its counters."""
    return hashlib.sha256((out / 'events.jsonl').read_bytes() + (out / 'objects.jsonl').read_bytes()).hexdigest()


def test_a_bag_with_tf_static_needs_no_calibration_file(tmp_path):
    """Extrinsics from tf2 (issue 19): fusion_sim latches the mounts on /tf_static as
    robot_state_publisher does; an independent reader (rosbags) finds them there, and the bag
    without its calibration.yaml replays to the same objects and events. The mounts are not
    the built-in ones, so ignoring tf (--no-tf, defaults) must change the outputs."""
    import yaml
    from rosbags.highlevel import AnyReader
    calib = yaml.safe_load((ROOT / 'config' / 'calibration.yaml').read_text())
    calib['sensors']['lidar']['translation'] = [0.8, 0.1, 1.9]
    calib['sensors']['radar'].update(translation=[2.1, -0.1, 0.55], rotation_xyzw=[0.0, 0.0, 0.0174524, 0.9998477])
    (tmp_path / 'mounts.yaml').write_text(yaml.safe_dump(calib))
    bag = simulate(tmp_path / 'bag', 'pedestrian_intrusion', SEED, 8.0, '--calibration', str(tmp_path / 'mounts.yaml'))

    # Our tf2_msgs (built from the definition; no wheel ships it) is ROS 2's type: the
    # RIHS01 hash of the installed description is the one rosbags computes for Jazzy's.
    from rosbags.typesys import Stores, get_typestore
    import os
    description = next(Path(p) / 'share/tf2_msgs/msg/TFMessage.json' for p in os.environ['AMENT_PREFIX_PATH'].split(':')
                       if (Path(p) / 'share/tf2_msgs/msg/TFMessage.json').is_file())
    installed = json.loads(description.read_text())
    jazzy = get_typestore(Stores.ROS2_JAZZY).hash_rihs01('tf2_msgs/msg/TFMessage')
    assert jazzy in [h['hash_string'] for h in installed['type_hashes']], installed['type_hashes']

    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == '/tf_static']
        assert [c.msgtype for c in conns] == ['tf2_msgs/msg/TFMessage'], reader.connections
        qos = conns[0].ext.offered_qos_profiles
        assert [(q.reliability.name, q.durability.name) for q in qos] == [('RELIABLE', 'TRANSIENT_LOCAL')], qos
        latched = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    assert len(latched) == 1
    mounts = {t.child_frame_id: t for t in latched[0].transforms}
    for sensor in calib['sensors'].values():
        t = mounts[sensor['frame_id']]
        assert t.header.frame_id == 'base_link'
        got = [t.transform.translation.x, t.transform.translation.y, t.transform.translation.z]
        assert got == pytest.approx(sensor['translation'])
        q = t.transform.rotation
        assert [q.x, q.y, q.z, q.w] == pytest.approx(sensor['rotation_xyzw'])

    with_file = replay(bag, tmp_path / 'with_file')
    (bag / 'calibration.yaml').unlink()
    tf_only = replay(bag, tmp_path / 'tf_only')
    assert outputs(tf_only) == outputs(with_file)
    sources = json.loads((tf_only / 'metrics.json').read_text())['extrinsics']
    assert sources == {'camera': 'tf', 'imu': 'tf', 'lidar': 'tf', 'radar': 'tf'}
    events = [json.loads(line)['kind'] for line in (tf_only / 'events.jsonl').read_text().splitlines()]
    assert 'zone_intrusion' in events, events
    ignored = replay(bag, tmp_path / 'ignored', '--no-tf')
    assert json.loads((ignored / 'metrics.json').read_text())['extrinsics']['lidar'] == 'defaults'
    assert outputs(ignored) != outputs(with_file), 'the mounts were never used'


def test_a_sensor_frame_tf_cannot_place_is_one_clear_error(tmp_path):
    """The LiDAR's frame is 'velodyne' on this robot; without a calibration file naming it,
    tf has no 'lidar_link' to give, and the replay says which sensor, which frame and why."""
    import yaml
    calib = yaml.safe_load((ROOT / 'config' / 'calibration.yaml').read_text())
    calib['sensors']['lidar']['frame_id'] = 'velodyne'
    (tmp_path / 'mounts.yaml').write_text(yaml.safe_dump(calib))
    bag = simulate(tmp_path / 'bag', 'nominal', SEED, 2.0, '--calibration', str(tmp_path / 'mounts.yaml'))
    (bag / 'calibration.yaml').unlink()
    res = subprocess.run([binary('fusion_replay'), str(bag), '--out', str(tmp_path / 'out')], capture_output=True,
                         text=True, env=child_env(), timeout=120)
    assert res.returncode == 1, res.stderr
    error = [line for line in res.stderr.splitlines() if line.startswith('fusion_replay: error:')]
    assert len(error) == 1, res.stderr
    for words in ('no calibration file', "lidar (lidar_link)", "frame 'lidar_link' does not exist", 'velodyne'):
        assert words in error[0], error[0]
    # Given the file that names the frame, the same bag replays.
    replay(bag, tmp_path / 'named', '--calibration', str(tmp_path / 'mounts.yaml'))


def test_camera_intrinsics_come_from_camera_info(tmp_path):
    """Intrinsics from CameraInfo (issue 19): a camera the defaults know nothing of (800×600,
    its own focal lengths and principal point) and a calibration file that gives no
    intrinsics, as a robot whose camera driver publishes them. The bag's CameraInfo (read
    by rosbags too) places the camera's boxes: the replay equals the one given the true
    intrinsics in the file. Without CameraInfo the default K misplaces them and labels go wrong."""
    import yaml
    from rosbags.highlevel import AnyReader
    calib = yaml.safe_load((ROOT / 'config' / 'calibration.yaml').read_text())
    k = [640.0, 0.0, 415.0, 0.0, 610.0, 290.0, 0.0, 0.0, 1.0]
    calib['sensors']['camera'].update(width=800, height=600, K=k)
    (tmp_path / 'true.yaml').write_text(yaml.safe_dump(calib))
    for key in ('width', 'height', 'K'):
        calib['sensors']['camera'].pop(key)
    (tmp_path / 'bare.yaml').write_text(yaml.safe_dump(calib))
    bag = simulate(tmp_path / 'bag', 'mixed', SEED, 8.0, '--calibration', str(tmp_path / 'true.yaml'))
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == '/camera/camera_info']
        infos = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    assert len(infos) == 240 and all((i.width, i.height, list(i.k)) == (800, 600, k) for i in infos)

    truth = replay(bag, tmp_path / 'truth', '--calibration', str(tmp_path / 'true.yaml'), '--camera-info-topic', '/none')
    from_info = replay(bag, tmp_path / 'info', '--calibration', str(tmp_path / 'bare.yaml'))
    blind = replay(bag, tmp_path / 'blind', '--calibration', str(tmp_path / 'bare.yaml'), '--camera-info-topic', '/none')
    assert outputs(from_info) == outputs(truth)
    counts = json.loads((from_info / 'metrics.json').read_text())['frontend']
    assert counts['camera_info.accepted'] == counts['camera.accepted'] == 240, counts
    labels = {name: evaluate(bag, out)['tracking']['label_accuracy'] for name, out in
              (('truth', truth), ('blind', blind))}
    print(json.dumps(labels))
    assert labels['blind'] < labels['truth'] - 0.03, labels


def test_a_camera_scaled_by_its_ingest_node_keeps_its_labels_and_health_checks(scenario_bags, tmp_path):
    """camera_ingest's `output_width`/`output_height` (here 416×416 for a 640×480 camera):
    the frame is scaled to fit without padding and its intrinsics with it. Labels stay as
    good as at full size, and the blackout is still seen (a grey letterbox padding once
    lifted a black frame's mean brightness above the blinded limit, and projecting with the
    full-size K mislabelled: 0.873 against 0.933)."""
    bag = scenario_bags('mixed', 20)
    ingest = tmp_path / 'ingest.yaml'
    shipped = (ROOT / 'config' / 'ingest.yaml').read_text()
    ingest.write_text(re.sub(r'output_(width|height): 0\b', r'output_\1: 416', shipped))
    assert ingest.read_text().count(': 416') == 2
    native = evaluate(bag, replay(bag, tmp_path / 'native'))
    scaled = evaluate(bag, replay(bag, tmp_path / 'scaled', '--ingest-params', str(ingest)))
    print(json.dumps({'native': native['tracking']['label_accuracy'], 'scaled': scaled['tracking']['label_accuracy'],
                      'false_alarms': [len(native['false_alarms']), len(scaled['false_alarms'])]}))
    assert all(e['detected'] for e in scaled['events']), scaled['events']
    assert scaled['tracking']['label_accuracy'] >= native['tracking']['label_accuracy'] - 0.02
    assert len(scaled['false_alarms']) == 0, scaled['false_alarms']


def test_bad_arguments_give_one_line_errors(tmp_path):
    bag = tmp_path / 'nope'
    for args, msg in ([[str(bag)], 'nope'], [[str(tmp_path), '--rate', '0'], '--rate'],
                      [[str(bag), '--backend', 'tpu'], "unknown backend 'tpu'"],
                      [[str(bag), '--input-size', '330x240'], 'multiples of 16'],
                      [[str(bag), '--precision', 'f8'], "unknown precision 'f8'"],
                      [[str(bag), '--detector-weights', str(tmp_path / 'missing.json')], 'missing.json']):
        res = subprocess.run([binary('fusion_replay'), *args], capture_output=True, text=True, env=child_env(), timeout=60)
        assert res.returncode == 1 and res.stderr.startswith('fusion_replay: error:') and msg in res.stderr, res.stderr


def launch_and_play(procs, probe, bag, *play_args, launch_args=()):
    """The launched node set on sim time, and `fusion_bag play` of `bag` into it once the
    graph is up; the probe records /anomaly/events and /fusion/objects."""
    from fusion_msgs.msg import AnomalyEvent, FusedObjectArray

    probe.subscribe('/anomaly/events', AnomalyEvent)
    probe.subscribe('/fusion/objects', FusedObjectArray)
    launch = procs([launcher(), 'sensor_fusion', 'fusion.launch.xml', 'use_sim_time:=true', *launch_args, '--grace', '3'],
                   name='fusion_launch', env=launch_env())
    probe.wait_publishers('/anomaly/events', timeout=40)
    probe.wait_publishers('/sensors/lidar', timeout=40)
    player = procs([binary('fusion_bag'), 'play', str(bag), '--clock', '200', '--wait-for-subscribers', '--delay', '1',
                    *play_args], name='play')
    return launch, player


def test_launched_nodes_publish_anomaly_events_over_dds(scenario_bags, procs, ros):
    from diagnostic_msgs.msg import DiagnosticArray

    from sensor_msgs.msg import Image

    bag = scenario_bags('pedestrian_intrusion', 12)
    probe = ros()
    probe.subscribe('/diagnostics', DiagnosticArray)
    probe.subscribe('/fusion/camera_boxes', Image)
    proc, player = launch_and_play(procs, probe, bag, launch_args=['annotated_image:=true'])
    assert player.p.wait(120) == 0, player.output()
    probe.wait_for(lambda: any(e.kind == 'zone_intrusion' for e in probe.get('/anomaly/events')), 20,
                   f'a zone_intrusion event; got {[e.kind for e in probe.get("/anomaly/events")]}\n{proc.output()[-3000:]}')
    ev = next(e for e in probe.get('/anomaly/events') if e.kind == 'zone_intrusion')
    assert ev.zone == 'forward' and list(ev.track_ids) and ev.header.frame_id == 'base_link'
    assert 0 < ev.position.x < 5.5 and abs(ev.position.y) < 1.6
    assert {kv.key for kv in ev.evidence} >= {'label', 'x_m', 'y_m', 'distance_m'}
    kinds = [e.kind for e in probe.get('/anomaly/events')]
    assert 'collision_risk' in kinds, kinds
    # Every kind published is one of the message's KIND_* constants (as rclpy generated them).
    from fusion_msgs.msg import AnomalyEvent
    declared = {v for k, v in vars(AnomalyEvent).items() if k.startswith('KIND_')}
    assert {'model_degraded', 'time_jump'} <= declared and set(kinds) <= declared, (kinds, declared)
    explain_events_of_a_played_bag(probe, ev)
    objs = probe.get('/fusion/objects')
    # Most of the 120 sets arrive complete and in time (sim time follows the player's /clock).
    assert len(objs) >= 80, len(objs)
    assert sum(o.partial for o in objs) <= len(objs) // 4
    assert max(len(o.objects) for o in objs) >= 2
    # Latency is the sim clock minus the set's stamp: never the -1.7e12 ms of a set taken
    # before the first /clock (the node clock reads 0 until then), never past the hard
    # deadline (those sets are not published). The player publishes /clock from a timer
    # thread, which a loaded host starves: on CI it ran 31 ms, and once 250 ms, behind the data
    # it had already sent. The node's clock reads no earlier than data within 50 ms of /clock;
    # a /clock later than that shows, truthfully, as a negative latency. Bounded here at 1 s,
    # which still tells a starved player from a clock that was never set.
    latencies = sorted(o.latency_ms for o in objs)
    assert -1000.0 <= latencies[0] and latencies[-1] <= 100.0, (latencies[:3], latencies[-3:])
    status = [s for m in probe.get('/diagnostics') for s in m.status if s.name.endswith('fusion')]
    assert status, 'fusion_node /diagnostics'
    keys = {kv.key for s in status for kv in s.values}
    assert {'latency_p99_ms', 'sets', 'received.lidar'} <= keys, keys
    # The scheduler's health: per-stage timing, degradation level, queue depths, RT status.
    assert {'stage.detector.p99_ms', 'stage.clustering.p99_ms', 'stage.preprocess.p99_ms', 'degradation.level',
            'degradation.rung', 'window.shed', 'queue.mailbox.camera', 'queue.inference', 'queue.in_flight',
            'rt.fusion', 'rt.inference', 'sets.released', 'dropped.superseded.lidar'} <= keys, keys
    values = {kv.key: kv.value for s in status for kv in s.values}
    assert values['rt.fusion'] in ('applied',) or values['rt.fusion'].startswith('fallback: SCHED_FIFO'), values['rt.fusion']
    # annotated_image:=true: the camera frames of the sets, in the camera's frame, with the
    # detector's boxes drawn in the class colours (sensor_fusion::rviz: a person is (214, 38, 41)).
    frames = probe.get('/fusion/camera_boxes')
    assert len(frames) >= 40, len(frames)
    f = frames[len(frames) // 2]
    assert (f.encoding, f.width, f.height, f.step, f.header.frame_id) == ('rgb8', 640, 480, 1920, 'camera_optical'), f.header
    person = bytes([214, 38, 41])
    assert sum(bytes(fr.data).count(person) for fr in frames) > 100, 'no person box drawn in any frame'


def test_launched_nodes_take_their_mounts_from_tf_static(tmp_path, procs, ros):
    """Extrinsics from tf2 in the launched graph (issue 19): the robot's mounts (not the
    built-in ones) latched on /tf_static by an rclpy publisher, as robot_state_publisher
    does, and no calibration file (calibration:=''). Every node places its sensors from tf
    (its log says so), and the played bag gives the zone intrusion its replay gives. The bag
    has the robot's odometry too: fusion_node reads /odom and publishes each object's velocity
    in the odometry frame."""
    import yaml
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.highlevel import AnyReader
    from tf2_msgs.msg import TFMessage
    from geometry_msgs.msg import TransformStamped

    calib = yaml.safe_load((ROOT / 'config' / 'calibration.yaml').read_text())
    calib['sensors']['lidar']['translation'] = [0.8, 0.1, 1.9]
    calib['sensors']['radar'].update(translation=[2.1, -0.1, 0.55], rotation_xyzw=[0.0, 0.0, 0.0174524, 0.9998477])
    (tmp_path / 'mounts.yaml').write_text(yaml.safe_dump(calib))
    bag = simulate(tmp_path / 'bag', 'pedestrian_intrusion', SEED, 12.0, '--calibration', str(tmp_path / 'mounts.yaml'),
                   '--odometry')
    (bag / 'calibration.yaml').unlink()
    replayed = [json.loads(line) for line in (replay(bag, tmp_path / 'replay') / 'events.jsonl').read_text().splitlines()]
    assert 'zone_intrusion' in [e['kind'] for e in replayed]

    # The bag's mounts, as the robot's robot_state_publisher would latch them.
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == '/tf_static']
        recorded = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)][0]
    mounts = []
    for r in recorded.transforms:
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = r.header.frame_id, r.child_frame_id
        tr, q = r.transform.translation, r.transform.rotation
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = tr.x, tr.y, tr.z
        t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = q.x, q.y, q.z, q.w
        mounts.append(t)
    probe = ros()
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    probe.publisher('/tf_static', TFMessage, latched).publish(TFMessage(transforms=mounts))

    launch, player = launch_and_play(procs, probe, bag, '--topics', '/camera/image_raw',
                                     '/camera/camera_info', '/lidar/points', '/radar/points', '/imu/data', '/odom',
                                     launch_args=['calibration:='])
    assert player.p.wait(120) == 0, player.output()
    probe.wait_for(lambda: any(e.kind == 'zone_intrusion' for e in probe.get('/anomaly/events')), 20,
                   f'a zone_intrusion event; got {[e.kind for e in probe.get("/anomaly/events")]}\n{launch.output()[-3000:]}')
    log = launch.output()
    for node, placed in (('camera_ingest', 'camera=tf'), ('lidar_ingest', 'lidar=tf'), ('radar_ingest', 'radar=tf'),
                         ('imu_ingest', 'imu=tf'), ('fusion_node', 'camera=tf imu=tf lidar=tf radar=tf')):
        lines = [line for line in log.splitlines() if line.startswith(f'[{node}') and 'extrinsics=' in line]
        assert lines and all(placed in line for line in lines), (node, lines or log[-3000:])
    ev = next(e for e in probe.get('/anomaly/events') if e.kind == 'zone_intrusion')
    first = next(e for e in replayed if e['kind'] == 'zone_intrusion')
    assert ev.zone == first['zone'] and abs(ev.position.x - first['position'][0]) < 0.5, (ev, first)
    # Odometry over DDS: the sets name its frame, and an object's velocity in it is its
    # velocity over the ground (base axes) turned by the ego's heading (the simulator's
    # odometry pose is the true one). The ego drives straight in this bag: the direction of
    # the turn is checked by fusion::odom's unit test and the replay test's scoring (mixed,
    # where the ego turns).
    truth = {r['stamp_ns']: r['ego']['yaw'] for r in map(json.loads, (bag / 'ground_truth.jsonl').read_text().splitlines())
             if r['type'] == 'frame'}
    sets = probe.get('/fusion/objects')
    assert sets and sum(s.odom_frame_id == 'odom' for s in sets) >= 0.9 * len(sets), [s.odom_frame_id for s in sets][:5]
    stamp = lambda s: s.header.stamp.sec * 10**9 + s.header.stamp.nanosec  # noqa: E731
    turned = [(truth[stamp(s)], o) for s in sets for o in s.objects if s.odom_frame_id == 'odom' and stamp(s) in truth]
    assert len(turned) > 100 and all(math.isfinite(o.odom_velocity.x) for _, o in turned), len(turned)
    for yaw, o in turned:
        g, v = o.ground_velocity, o.odom_velocity
        expected = (math.cos(yaw) * g.x - math.sin(yaw) * g.y, math.sin(yaw) * g.x + math.cos(yaw) * g.y)
        assert math.hypot(v.x - expected[0], v.y - expected[1]) < 1e-3 * (1 + math.hypot(g.x, g.y)), (yaw, g, v)


def test_a_second_lidar_is_declared_launched_and_fused(tmp_path, procs, ros):
    """A robot with two LiDARs (issue 19, the sensor set as data): the calibration declares a
    front bumper LiDAR next to the roof one, fusion_sim sweeps both from their mounts,
    example_two_lidars.launch.xml starts an ingest node for it (sensor.launch.xml), and
    fusion_node subscribes to sensors/front_bumper_lidar and fuses both sweeps into each set.
    The roof LiDAR's ingest node crops at 12 m here, so a LiDAR object beyond 14 m is one only
    the bumper LiDAR saw."""
    import shutil

    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import PointCloud2

    prefix = Path(launch_env()['AMENT_PREFIX_PATH'].split(':')[0])
    config = tmp_path / 'config'
    shutil.copytree(prefix / 'share/sensor_fusion/config', config)
    ingest = yaml.safe_load((config / 'ingest.yaml').read_text())
    ingest['/**/lidar_ingest']['ros__parameters']['max_range'] = 12.0
    (config / 'ingest.yaml').write_text(yaml.safe_dump(ingest))
    calibration = config / 'calibration_two_lidars.yaml'
    bag = simulate(tmp_path / 'bag', 'nominal', SCENARIO_SEED, 10.0, '--calibration', str(calibration))
    # The independent reader sees the second sweep in the bumper's own frame.
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == '/front_bumper_lidar/points']
        assert conns and conns[0].msgcount == 100, [c.topic for c in reader.connections]
        first = reader.deserialize(next(reader.messages(connections=conns))[2], conns[0].msgtype)
        assert first.header.frame_id == 'front_bumper_lidar_link' and first.width > 1000

    # The replay fuses it as the nodes do, each LiDAR with its own node's filters: crop the
    # bumper's too (its node's block) and nothing beyond the crop is left.
    def far_objects(out):
        sets = [json.loads(line) for line in (out / 'objects.jsonl').read_text().splitlines()]
        return [o for s in sets for o in s['objects'] if o['sensors'] & 2 and math.hypot(o['center'][0] - 1.0, o['center'][1]) > 14.0]

    replayed = replay(bag, tmp_path / 'replay', '--ingest-params', str(config / 'ingest.yaml'))
    metrics = json.loads((replayed / 'metrics.json').read_text())
    assert metrics['messages']['/front_bumper_lidar/points'] == 100, metrics['messages']
    assert far_objects(replayed), 'the replay did not fuse the bumper LiDAR'
    both_cropped = dict(ingest, **{'/**/front_bumper_lidar_ingest': {'ros__parameters': {'max_range': 12.0}}})
    (tmp_path / 'both_cropped.yaml').write_text(yaml.safe_dump(both_cropped))
    assert not far_objects(replay(bag, tmp_path / 'cropped', '--ingest-params', str(tmp_path / 'both_cropped.yaml')))

    probe = ros()
    for topic, ty in (('/sensors/front_bumper_lidar', PointCloud2), ('/sensors/lidar', PointCloud2),
                      ('/diagnostics', DiagnosticArray)):
        probe.subscribe(topic, ty)
    from fusion_msgs.msg import FusedObjectArray
    probe.subscribe('/fusion/objects', FusedObjectArray)
    launch = procs([launcher(), 'sensor_fusion', 'example_two_lidars.launch.xml', 'use_sim_time:=true',
                    f'config_dir:={config}', '--grace', '3'], name='fusion_launch', env=launch_env())
    probe.wait_publishers('/sensors/front_bumper_lidar', timeout=40)
    probe.wait_publishers('/fusion/objects', timeout=40)
    player = procs([binary('fusion_bag'), 'play', str(bag), '--clock', '200', '--wait-for-subscribers', '--delay', '1'],
                   name='play')
    assert player.p.wait(120) == 0, player.output()
    probe.wait_for(lambda: len(probe.get('/fusion/objects')) >= 80, 20,
                   f'sets on /fusion/objects\n{launch.output()[-3000:]}')
    clouds = probe.get('/sensors/front_bumper_lidar')
    assert len(clouds) >= 80 and clouds[0].header.frame_id == 'base_link', len(clouds)
    # The roof LiDAR's node took its 12 m crop from the params file (a /**/lidar_ingest block),
    # so the far objects can only be the bumper's.
    import numpy as np
    roof = probe.get('/sensors/lidar')[-1]
    xyz = np.frombuffer(bytes(roof.data), dtype=np.float32).reshape(roof.width, -1)[:, :3]
    assert np.linalg.norm(xyz - [1.0, 0.0, 1.8], axis=1).max() < 12.2, 'the params file did not reach lidar_ingest'
    sets = probe.get('/fusion/objects')
    # Both sweeps are members of the sets (nothing but a late first frame may be missing).
    assert sum('front_bumper_lidar' in s.missing_sensors for s in sets) <= 3, [list(s.missing_sensors) for s in sets][:10]
    from fusion_msgs.msg import FusedObject
    lidar_bit = FusedObject.SENSOR_LIDAR
    far = [o for s in sets for o in s.objects
           if o.sensors & lidar_bit and math.hypot(o.pose.position.x - 1.0, o.pose.position.y) > 14.0]
    assert far, 'no LiDAR object beyond the roof LiDAR\'s 12 m crop: the bumper\'s sweep was not fused'
    # fusion_node keeps per-sensor diagnostics under the configured names.
    values = {kv.key: kv.value for d in probe.get('/diagnostics') for st in d.status
              if st.name.startswith('fusion_node') for kv in st.values}
    assert int(values.get('received.front_bumper_lidar', 0)) >= 80 and int(values.get('received.lidar', 0)) >= 80, values
    log = launch.output()
    assert re.search(r'\[front_bumper_lidar_ingest[^\]]*\].*output=sensors/front_bumper_lidar', log), log[-3000:]


def test_the_multi_sensor_robot_is_launched_and_fused(tmp_path, procs, ros):
    """The robot of issue 19 over DDS: fusion_sim's multi_sensor scenario on its robot (three
    cameras, a roof and a bumper LiDAR, three radars, an IMU, odometry, every mount on
    /tf_static), example_multi_sensor.launch.xml starting an ingest node per sensor, and
    fusion_node fusing all nine streams with the shipped detector on every camera of a set:
    each sensor's /sensors/<name> is published, sets name no sensor missing once running,
    velocities come in the odometry frame too, what only a side camera sees gets camera
    evidence, and nothing false is raised on /anomaly/events. Played at half speed (sim
    time): three detector frames per set are more than this 2-core machine runs in real
    time (docs/measured.md)."""
    import shutil

    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import AnomalyEvent, FusedObject, FusedObjectArray
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import Image, Imu, PointCloud2

    prefix = Path(launch_env()['AMENT_PREFIX_PATH'].split(':')[0])
    config = tmp_path / 'config'
    shutil.copytree(prefix / 'share/sensor_fusion/config', config)
    # The scenario's own robot is the installed calibration's: fusion_sim needs no --calibration.
    bag = simulate(tmp_path / 'bag', 'multi_sensor', 1, 8.5, '--odometry')
    assert (bag / 'calibration.yaml').read_text().count('kind:') == 5
    sensors = {'camera': Image, 'left_camera': Image, 'right_camera': Image, 'lidar': PointCloud2,
               'front_bumper_lidar': PointCloud2, 'radar': PointCloud2, 'left_radar': PointCloud2,
               'right_radar': PointCloud2, 'imu': Imu}
    # The independent reader sees every further sensor in its own frame, and the mounts on /tf_static.
    with AnyReader([bag]) as reader:
        topics = {c.topic: c for c in reader.connections}
        for name in ('left_camera', 'right_camera'):
            assert topics[f'/{name}/image_raw'].msgcount == 255, sorted(topics)
        for name in ('front_bumper_lidar', 'left_radar', 'right_radar'):
            conn = topics[f'/{name}/points']
            first = reader.deserialize(next(reader.messages(connections=[conn]))[2], conn.msgtype)
            assert first.header.frame_id == f'{name}_link', first.header.frame_id
        tf = reader.deserialize(next(reader.messages(connections=[topics['/tf_static']]))[2],
                                topics['/tf_static'].msgtype)
        assert {t.child_frame_id for t in tf.transforms} >= {'left_radar_link', 'right_camera_optical'}

    probe = ros()
    for name, ty in sensors.items():
        probe.subscribe(f'/sensors/{name}', ty)
    probe.subscribe('/diagnostics', DiagnosticArray)
    probe.subscribe('/fusion/objects', FusedObjectArray)
    probe.subscribe('/anomaly/events', AnomalyEvent)
    launch = procs([launcher(), 'sensor_fusion', 'example_multi_sensor.launch.xml', 'use_sim_time:=true',
                    f'config_dir:={config}', '--grace', '3'], name='fusion_launch', env=launch_env())
    probe.wait_publishers('/sensors/right_radar', timeout=40)
    probe.wait_publishers('/fusion/objects', timeout=40)
    player = procs([binary('fusion_bag'), 'play', str(bag), '--clock', '200', '--rate', '0.5',
                    '--start-offset', '2', '--wait-for-subscribers', '--delay', '1'], name='play')
    assert player.p.wait(120) == 0, player.output()
    probe.wait_for(lambda: len(probe.get('/fusion/objects')) >= 55, 20,
                   f'sets on /fusion/objects\n{launch.output()[-3000:]}')
    for name in sensors:
        assert len(probe.get(f'/sensors/{name}')) >= 40, (name, len(probe.get(f'/sensors/{name}')))
    sets = probe.get('/fusion/objects')
    running = sets[5:]
    missing = [list(s.missing_sensors) for s in running if s.missing_sensors]
    assert len(missing) <= 3, missing
    assert all(s.odom_frame_id == 'odom' for s in running), {s.odom_frame_id for s in running}
    beside = [o for s in sets for o in s.objects
              if abs(math.degrees(math.atan2(o.pose.position.y, o.pose.position.x))) > 40
              and o.sensors & FusedObject.SENSOR_CAMERA]
    labels = {(o.pose.position.y > 0, o.label) for o in beside}
    assert (True, 'vehicle') in labels and (False, 'person') in labels, labels
    events = probe.get('/anomaly/events')
    assert not events, [(e.kind, e.rule, list(e.sensors)) for e in events]
    # Per-sensor diagnostics under the configured names, and each ingest node's latency.
    values = {}
    for d in probe.get('/diagnostics'):
        for st in d.status:
            for kv in st.values:
                values[(st.name.split(':')[0], kv.key)] = kv.value
    for name in sensors:
        assert int(values.get(('fusion_node', f'received.{name}'), 0)) >= 40, (name, sorted(values)[:40])
    latency = {st.name: kv.value for d in probe.get('/diagnostics') for st in d.status for kv in st.values
               if st.name.endswith('_ingest') and kv.key == 'latency_p99_ms'}
    print('ingest latency p99 ms', latency)


def test_an_object_only_the_bumper_lidar_sees_is_tracked(tmp_path):
    """The multi-sensor robot's roof LiDAR spans ±15° (config/calibration_multi_sensor.yaml),
    so a 0.45 m dog running beside the front bumper, 3-4 m from the roof, is under its
    lowest beam, and no camera's field holds it; the bumper LiDAR (180° ahead of the bumper)
    sees it. The simulator's truth says so sweep by sweep, and the fused output still tracks
    the dog, with its velocity over the ground in the odometry frame."""
    out = replay_sim('multi_sensor', 1, 8.5, tmp_path / 'out', '--odometry')
    truth = [json.loads(line) for line in (out / 'ground_truth.jsonl').read_text().splitlines()]
    dog = 6
    hits = {}
    for r in truth:
        if r['type'] == 'lidar_hits':
            hits.setdefault(r['sensor'], []).append(r['hits'].get(str(dog), 0))
    assert len(hits['lidar']) == len(hits['front_bumper_lidar']) == 85, {k: len(v) for k, v in hits.items()}
    assert not any(hits['lidar']), 'the roof LiDAR never returns from the dog'
    assert sum(n > 0 for n in hits['front_bumper_lidar']) >= 0.85 * 85, hits['front_bumper_lidar']
    frames = {r['stamp_ns']: r for r in truth if r['type'] == 'frame'}
    assert all(a['box2d'] is None for f in frames.values() for a in f['actors'] if a['id'] == dog)
    assert not any(a['id'] == dog and a.get('box2d') for r in truth if r['type'] == 'camera_frame' for a in r['actors'])
    # Tracked: an object within 0.8 m of the dog in the sets (measured 82 of 84), LiDAR-seen,
    # moving at the dog's speed over the ground (median error measured 0.01 m/s).
    near, lidar_seen, errors = 0, 0, []
    sets = [json.loads(line) for line in (out / 'objects.jsonl').read_text().splitlines()]
    for s in sets:
        f = frames.get(s['stamp_ns'])
        if f is None:
            continue
        a = next(a for a in f['actors'] if a['id'] == dog)
        o = min(s['objects'], key=lambda o: math.dist(o['center'][:2], a['center'][:2]), default=None)
        if o is None or math.dist(o['center'][:2], a['center'][:2]) > 0.8:
            continue
        near += 1
        lidar_seen += bool(o['sensors'] & 2)  # this update's LiDAR bit: the bumper's (the roof never hit it)
        if o['age'] >= 10:
            yaw = f['ego']['yaw']
            wx = math.cos(yaw) * a['velocity'][0] - math.sin(yaw) * a['velocity'][1]
            wy = math.sin(yaw) * a['velocity'][0] + math.cos(yaw) * a['velocity'][1]
            errors.append(math.hypot(o['odom_velocity'][0] - wx, o['odom_velocity'][1] - wy))
    print(json.dumps({'sets': len(sets), 'dog_tracked': near, 'lidar_seen': lidar_seen,
                      'odom_velocity_error_p50': statistics.median(errors)}))
    assert near >= 0.85 * len(sets) and lidar_seen >= 0.8 * near, (near, lidar_seen, len(sets))
    assert len(errors) >= 50 and statistics.median(errors) <= 0.3, errors


def test_a_robot_without_an_imu_is_launched_and_fused(tmp_path, procs, ros):
    """A robot with no IMU (issue 19): its calibration declares camera, LiDAR and radar only,
    fusion_sim records no IMU samples for it, and `fusion.launch.xml imu:=false` starts no
    imu_ingest. fusion_node fuses the three streams, turns its tracks by the odometry's
    heading, names no IMU as missing or silent, and catches the pedestrian's intrusion."""
    import shutil

    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import AnomalyEvent, FusedObjectArray
    from rosbags.highlevel import AnyReader

    prefix = Path(launch_env()['AMENT_PREFIX_PATH'].split(':')[0])
    config = tmp_path / 'config'
    shutil.copytree(prefix / 'share/sensor_fusion/config', config)
    calibration = config / 'calibration.yaml'
    lines = calibration.read_text().splitlines()
    assert sum(line.strip().startswith('imu:') for line in lines) == 1, lines
    calibration.write_text('\n'.join(line for line in lines if not line.strip().startswith('imu:')) + '\n')
    bag = simulate(tmp_path / 'bag', 'pedestrian_intrusion', 3, 8.0, '--odometry', '--calibration', str(calibration))
    with AnyReader([bag]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts.get('/imu/data', 0) == 0 and counts['/lidar/points'] == 80 and counts['/odom'] == 400, counts
    # The scheduler bench reads the bag's calibration and feeds its sensors: no IMU among them.
    bench = subprocess.run([binary('fusion_sched_bench'), str(bag), '--rates', '1', '--schedulers', 'edf'],
                           capture_output=True, text=True, env=child_env(), timeout=300)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert json.loads(bench.stdout)['runs'][0]['sets'] >= 70, bench.stdout[:2000]

    probe = ros()
    probe.subscribe('/diagnostics', DiagnosticArray)
    probe.subscribe('/fusion/objects', FusedObjectArray)
    probe.subscribe('/anomaly/events', AnomalyEvent)
    launch = procs([launcher(), 'sensor_fusion', 'fusion.launch.xml', 'use_sim_time:=true', f'config_dir:={config}',
                    'imu:=false', '--grace', '3'], name='fusion_launch', env=launch_env())
    probe.wait_publishers('/fusion/objects', timeout=40)
    probe.wait_for(lambda: probe.node.count_publishers('/sensors/radar') >= 1, 40, 'radar_ingest')
    player = procs([binary('fusion_bag'), 'play', str(bag), '--clock', '200', '--wait-for-subscribers', '--delay', '1'],
                   name='play')
    assert player.p.wait(120) == 0, player.output()
    probe.wait_for(lambda: len(probe.get('/fusion/objects')) >= 70, 20, f'sets\n{launch.output()[-3000:]}')
    assert probe.node.count_publishers('/sensors/imu') == 0, 'imu_ingest is not started'
    sets = probe.get('/fusion/objects')
    assert not any('imu' in s.missing_sensors for s in sets), [list(s.missing_sensors) for s in sets]
    assert all(s.odom_frame_id == 'odom' for s in sets[5:]), {s.odom_frame_id for s in sets}
    events = [(e.kind, e.rule, list(e.sensors)) for e in probe.get('/anomaly/events')]
    assert any(kind == 'zone_intrusion' for kind, _, _ in events), events
    assert not any(kind == 'sensor_dropout' for kind, _, _ in events), events
    fusion = {kv.key: kv.value for d in probe.get('/diagnostics') for st in d.status if st.name.startswith('fusion_node')
              for kv in st.values}
    assert int(fusion['received.lidar']) >= 70 and not any('imu' in k for k in fusion if k.startswith(('received.', 'stream.'))), fusion
    assert 'imu_ingest' not in launch.output(), launch.output()[-3000:]


def test_ros2_param_set_changes_live_thresholds_and_refuses_the_rest(scenario_bags, procs, ros):
    """`ros2 param set` on the launched graph (its SetParameters service, called from rclpy):
    fusion_node's anomaly thresholds change while it runs (the next collision_risk states the
    new threshold, get_parameters shows it), and every other set, on any node, is refused with
    its reason instead of being acknowledged and ignored."""
    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import AnomalyEvent
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters

    bag = scenario_bags('pedestrian_intrusion', 12)
    probe = ros()
    probe.subscribe('/anomaly/events', AnomalyEvent)
    probe.subscribe('/diagnostics', DiagnosticArray)
    launch = procs([launcher(), 'sensor_fusion', 'fusion.launch.xml', 'use_sim_time:=true', '--grace', '3'],
                   name='fusion_launch', env=launch_env())

    def service(node, srv, name):
        client = probe.node.create_client(srv, f'/{node}/{name}')
        assert client.wait_for_service(timeout_sec=40), f'/{node}/{name} not offered\n{launch.output()[-2000:]}'
        return client

    def set_param(node, name, value):
        v = ParameterValue()
        if isinstance(value, bool):
            v.type, v.bool_value = ParameterType.PARAMETER_BOOL, value
        elif isinstance(value, float):
            v.type, v.double_value = ParameterType.PARAMETER_DOUBLE, value
        elif isinstance(value, int):
            v.type, v.integer_value = ParameterType.PARAMETER_INTEGER, value
        else:
            v.type, v.string_value = ParameterType.PARAMETER_STRING, value
        fut = service(node, SetParameters, 'set_parameters').call_async(
            SetParameters.Request(parameters=[Parameter(name=name, value=v)]))
        probe.wait_for(fut.done, 10, f'a set_parameters reply from {node}')
        return fut.result().results[0]

    r = set_param('fusion_node', 'anomaly.ttc_threshold_s', 4.5)
    assert r.successful, r.reason
    for node, name, value, why in [
        ('fusion_node', 'sync.wait_ms', 20.0, 'start-up'),
        ('fusion_node', 'anomaly.ttc_threshold_s', 'soon', 'must be a number'),
        ('fusion_node', 'anomaly.ttc_threshold_s', -1.0, '>= 0'),
        ('fusion_node', 'no_such_parameter', 1.0, 'no such parameter'),
        ('radar_ingest', 'queue_size', 8, 'start-up'),
        ('summarizer', 'speak', True, 'start-up'),
    ]:
        r = set_param(node, name, value)
        assert not r.successful and why in r.reason, (node, name, value, r.reason)
    fut = service('fusion_node', GetParameters, 'get_parameters').call_async(
        GetParameters.Request(names=['anomaly.ttc_threshold_s', 'sync.wait_ms']))
    probe.wait_for(fut.done, 10, 'a get_parameters reply')
    assert [v.double_value for v in fut.result().values] == [4.5, 50.0]
    # A whole number for a double parameter is that double (as a YAML file's `wait_ms: 40`),
    # and a number for a count the node rounds is that count (`deadline_window: 100.0`); both
    # applied (`params.applied` 3); the window is its default, and the scenario has no impact.
    for name, value in [('anomaly.impact_refractory_s', 2), ('anomaly.deadline_window', 100.0)]:
        r = set_param('fusion_node', name, value)
        assert r.successful, (name, r.reason)
    fut = service('fusion_node', GetParameters, 'get_parameters').call_async(
        GetParameters.Request(names=['anomaly.impact_refractory_s', 'anomaly.deadline_window']))
    probe.wait_for(fut.done, 10, 'a get_parameters reply')
    got = [(v.type, v.double_value, v.integer_value) for v in fut.result().values]
    assert got == [(ParameterType.PARAMETER_DOUBLE, 2.0, 0), (ParameterType.PARAMETER_INTEGER, 0.0, 100)], got
    # `ros2 param describe` says what the typed struct's doc comment says.
    fut = service('fusion_node', DescribeParameters, 'describe_parameters').call_async(
        DescribeParameters.Request(names=['sync.wait_ms', 'anomaly.ttc_threshold_s']))
    probe.wait_for(fut.done, 10, 'a describe_parameters reply')
    described = [d.description for d in fut.result().descriptors]
    assert 'released partial' in described[0] and 'time to collision' in described[1], described

    probe.wait_publishers('/sensors/lidar', timeout=40)
    player = procs([binary('fusion_bag'), 'play', str(bag), '--clock', '200', '--wait-for-subscribers', '--delay', '1'],
                   name='play')
    assert player.p.wait(120) == 0, player.output()
    probe.wait_for(lambda: any(e.kind == AnomalyEvent.KIND_COLLISION_RISK for e in probe.get('/anomaly/events')), 20,
                   f'a collision_risk event; got {[e.kind for e in probe.get("/anomaly/events")]}')
    risks = [e for e in probe.get('/anomaly/events') if e.kind == AnomalyEvent.KIND_COLLISION_RISK]
    assert [e.threshold for e in risks] == [4.5] * len(risks), [(e.threshold, e.measured_value) for e in risks]
    values = {kv.key: kv.value for m in probe.get('/diagnostics') for s in m.status if s.name.endswith('fusion')
              for kv in s.values}
    assert values.get('params.applied') == '3' and 'params.refused' not in values, values


def explain_events_of_a_played_bag(probe, zone_event):
    """/anomaly/explain (the summarizer) answers for an event of the played bag: by id, by
    time window, and with a reason for an id it never saw."""
    from fusion_msgs.srv import Explain

    client = probe.node.create_client(Explain, '/anomaly/explain')
    assert client.wait_for_service(timeout_sec=30), '/anomaly/explain not offered'

    def call(**fields):
        req = Explain.Request()
        for k, v in fields.items():
            setattr(req, k, v)
        fut = client.call_async(req)
        # The model answers between summaries: up to a few 2 s deadlines.
        probe.wait_for(fut.done, 60, f'an /anomaly/explain answer to {fields}')
        return fut.result()

    r = call(event_id=zone_event.event_id)
    assert r.success, r.message
    assert list(r.event_ids) == [zone_event.event_id] and list(r.kinds) == ['zone_intrusion']
    assert list(r.rules) == ['track_inside_zone']
    assert r.measured_values[0] == pytest.approx(zone_event.measured_value) and r.thresholds[0] == zone_event.threshold
    depth = next(kv.value for kv in zone_event.evidence if kv.key == 'zone_depth_m')
    assert r.counterfactuals[0] == f"Would not have fired had the object stayed {depth} m further out, outside the 'forward' zone."
    if r.fallback:
        # The deterministic explanation: what happened, the rule, the evidence, the counterfactual.
        assert r.model == 'template' and r.fallback_reason
        assert f'Event {zone_event.event_id}:' in r.text and 'Rule track_inside_zone' in r.text
        assert 'zone_depth_m = ' in r.text and r.counterfactuals[0] in r.text
    else:
        assert r.model.lower().startswith('smollm2') and r.text.strip()
    # A window around the event's stamp holds it; events come oldest first.
    t = zone_event.header.stamp
    r = call(window_start=type(t)(sec=t.sec - 1, nanosec=t.nanosec), window_end=type(t)(sec=t.sec + 1, nanosec=t.nanosec))
    assert r.success and zone_event.event_id in r.event_ids and list(r.event_ids) == sorted(r.event_ids), r.message
    r = call(event_id=10**9)
    assert not r.success and r.message.startswith(f'no event {10**9}: this summarizer holds events '), r.message


def test_a_seek_forward_gives_one_time_jump_and_no_dropouts(scenario_bags, procs, ros):
    """/clock and data leap forward (the player stopped after ~3 s and another started 9 s
    into the bag, as a seek does): one time_jump event (data_time_went_forward), no stream
    declared silent for the skipped time, objects again after the seek, the graph alive."""
    from fusion_msgs.msg import AnomalyEvent

    bag = scenario_bags('pedestrian_intrusion', 12)
    probe = ros()
    launch, first = launch_and_play(procs, probe, bag)
    probe.wait_for(lambda: probe.count('/fusion/objects') >= 20, 40, f'objects before the seek\n{launch.output()[-3000:]}')
    first.stop()

    def stamps():
        return [o.header.stamp.sec + o.header.stamp.nanosec * 1e-9 for o in probe.get('/fusion/objects')]

    # The player is gone, but sets already received may still be in the pipeline (under load,
    # for longer than any fixed sleep): the last stamp before the seek is taken once no object
    # has arrived for 1.5 s.
    seen = [probe.count('/fusion/objects'), time.monotonic()]

    def quiet():
        n = probe.count('/fusion/objects')
        if n != seen[0]:
            seen[:] = [n, time.monotonic()]
        return time.monotonic() - seen[1] > 1.5

    probe.wait_for(quiet, 30, 'the objects of the first play to drain')
    last_before = max(stamps())
    procs([binary('fusion_bag'), 'play', str(bag), '--clock', '200', '--start-offset', '9', '--delay', '0.5'], name='seek')
    probe.wait_for(lambda: sum(t > last_before + 4.0 for t in stamps()) >= 15, 60,
                   f'objects after the seek; events {[(e.kind, e.rule) for e in probe.get("/anomaly/events")]}')
    time.sleep(1.0)
    events = probe.get('/anomaly/events')
    jumps = [e for e in events if e.kind == AnomalyEvent.KIND_TIME_JUMP]
    assert [e.rule for e in jumps] == ['data_time_went_forward'], [(e.kind, e.rule) for e in events]
    leap = {kv.key: float(kv.value) for kv in jumps[0].evidence}['jump_forward_s']
    assert 4.0 < leap < 9.5 and jumps[0].severity == AnomalyEvent.INFO, leap
    # No stream declared silent for the skipped time. (A loaded host may still starve a
    # stream after the seek for a few hundred ms: that is a real dropout of post-seek data,
    # told apart by its last message, which came after the seek.)
    dropouts = [(e.rule, list(e.sensors), {kv.key: kv.value for kv in e.evidence}) for e in events
                if e.kind == 'sensor_dropout']
    assert all(float(ev['last_message_stamp_s']) > last_before + 4.0 and float(ev['silent_s']) < 1.0
               for _, _, ev in dropouts), (last_before, dropouts)
    after = [t for t in stamps() if t > last_before]
    assert min(after) > last_before + 4.0 and max(after) - min(after) > 1.0, (last_before, after[:3], after[-3:])
    assert launch.alive()


def test_a_bag_played_in_a_loop_restarts_the_timeline_with_one_event_per_loop(scenario_bags, procs, ros):
    """`fusion_bag play --loop` takes data time (and /clock) back at every restart: the
    pipeline's synchronizer, tracker and rules start over, one time_jump event says so, the
    intrusion is caught again in every loop and no stream gets stuck."""
    from fusion_msgs.msg import AnomalyEvent

    bag = scenario_bags('pedestrian_intrusion', 6)
    probe = ros()
    launch, _ = launch_and_play(procs, probe, bag, '--loop')
    probe.wait_for(lambda: sum(e.kind == 'time_jump' for e in probe.get('/anomaly/events')) >= 2, 40,
                   f'two loops; events {[e.kind for e in probe.get("/anomaly/events")]}\n{launch.output()[-3000:]}')
    time.sleep(3)  # into the third pass
    events = probe.get('/anomaly/events')
    jumps = [i for i, e in enumerate(events) if e.kind == 'time_jump']
    passes = [events[a:b] for a, b in zip([0] + [j + 1 for j in jumps], jumps + [len(events)])]
    for n, p in enumerate(passes[:2]):  # the two complete passes
        assert any(e.kind == 'zone_intrusion' for e in p), (n, [e.kind for e in p])
    for j in jumps:
        e = events[j]
        back = {kv.key: float(kv.value) for kv in e.evidence}['jump_back_s']
        assert e.rule == 'data_time_went_back' and e.severity == AnomalyEvent.INFO and 5.0 < back < 6.5, (e, back)
    ids = [e.event_id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), 'event ids keep counting across loops'
    # Objects flow in every pass: stamps go back at each loop and climb again.
    stamps = [o.header.stamp.sec + o.header.stamp.nanosec * 1e-9 for o in probe.get('/fusion/objects')]
    restarts = [i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1] - 1.0]
    assert len(restarts) >= 2 and len(stamps) - restarts[-1] >= 10, (len(stamps), restarts)
    assert launch.alive()

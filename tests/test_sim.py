"""fusion_sim against the independent rosbags reader and its own ground truth."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import yaml
from conftest import simulate
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.ROS2_JAZZY)
START_NS = 1_700_000_000_000_000_000
RATES = {'/camera/image_raw': 30, '/camera/camera_info': 30, '/lidar/points': 10, '/radar/points': 20, '/imu/data': 200}


def ground_truth(bag):
    lines = [json.loads(line) for line in (bag / 'ground_truth.jsonl').read_text().splitlines()]
    return ([x for x in lines if x['type'] == 'frame'], [x for x in lines if x['type'] == 'event'])


def messages(bag, topic):
    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == topic]
        for c, t, raw in r.messages(connections=conns):
            yield t, TS.deserialize_cdr(raw, c.msgtype)


def stamp(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def quat_matrix(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def sensor_tf(calib, name):
    s = calib['sensors'][name]
    t = np.eye(4)
    t[:3, :3] = quat_matrix(s['rotation_xyzw'])
    t[:3, 3] = s['translation']
    return t


def ego_tf(x, y, yaw):
    t = np.eye(4)
    t[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    t[:2, 3] = [x, y]
    return t


@pytest.fixture(scope='module')
def nominal(tmp_path_factory):
    bag = simulate(tmp_path_factory.mktemp('sim') / 'nominal', 'nominal', seed=3, duration=10.0)
    yield bag
    shutil.rmtree(bag, ignore_errors=True)


def test_bag_reads_in_rosbags_with_types_counts_and_stamps(nominal):
    with Reader(nominal) as r:
        got = {c.topic: (c.msgtype, c.msgcount) for c in r.connections}
    assert got == {
        '/camera/image_raw': ('sensor_msgs/msg/Image', 300), '/camera/camera_info': ('sensor_msgs/msg/CameraInfo', 300),
        '/lidar/points': ('sensor_msgs/msg/PointCloud2', 100), '/radar/points': ('sensor_msgs/msg/PointCloud2', 200),
        '/imu/data': ('sensor_msgs/msg/Imu', 2000), '/tf_static': ('tf2_msgs/msg/TFMessage', 1)}
    for topic, hz in RATES.items():
        stamps = [stamp(m) for t, m in messages(nominal, topic) if t == stamp(m)]
        assert len(stamps) == got[topic][1], f'{topic}: log time = header stamp for every message'
        assert stamps[0] == START_NS and np.allclose(np.diff(stamps), 1e9 / hz, atol=1), topic
    _, img = next(messages(nominal, '/camera/image_raw'))
    assert (img.encoding, img.width, img.height, img.header.frame_id) == ('rgb8', 640, 480, 'camera_optical')
    frames, _ = ground_truth(nominal)
    assert len(frames) == 300 and frames[0]['stamp_ns'] == START_NS


def test_lidar_points_on_actors_project_into_their_image_boxes(nominal):
    calib = yaml.safe_load((nominal / 'calibration.yaml').read_text())
    k = np.array(calib['sensors']['camera']['K']).reshape(3, 3)
    lidar_tf, cam_tf = sensor_tf(calib, 'lidar'), sensor_tf(calib, 'camera')
    frames, _ = ground_truth(nominal)
    ego = np.array([[f['ego']['x'], f['ego']['y'], f['ego']['yaw']] for f in frames])
    times = np.array([f['t'] for f in frames])
    # Actors are told apart in the cloud by intensity: each has its own material (drawn
    # independently of its class, in the ground truth), the ground returns 15 ± 3.
    materials = {a['id']: a['lidar_intensity'] for f in frames for a in f['actors']}
    inside = total = 0
    for i, (_, cloud) in enumerate(messages(nominal, '/lidar/points')):
        if i % 5:
            continue
        pts = np.frombuffer(bytes(cloud.data), dtype='<f4').reshape(-1, 5)
        t0 = (stamp(cloud) - START_NS) * 1e-9
        for p in pts:
            owners = [i for i, m in materials.items() if abs(p[3] - m) <= 3.0]
            if len(owners) != 1 or abs(p[3] - 15.0) <= 3.5:
                continue
            tf = t0 + float(p[4])
            # The point in the world at its firing time, then in the camera at the nearest frame.
            e = [np.interp(tf, times, ego[:, j]) for j in range(3)]
            world = ego_tf(*e) @ lidar_tf @ np.array([p[0], p[1], p[2], 1.0])
            j = int(round(tf * 30))
            cam = np.linalg.inv(ego_tf(*ego[j]) @ cam_tf) @ world
            if cam[2] <= 0.5:
                continue
            u, v = (k @ (cam[:3] / cam[2]))[:2]
            if not (0 <= u < 640 and 0 <= v < 480):
                continue
            actor = next((a for a in frames[j]['actors'] if a['id'] == owners[0]), None)
            if actor is None or actor['box2d'] is None:
                continue
            x0, y0, x1, y1 = actor['box2d']
            total += 1
            inside += x0 - 1 <= u <= x1 + 1 and y0 - 1 <= v <= y1 + 1
    assert total > 200, total
    assert inside / total >= 0.95, (inside, total)


def test_radar_doppler_is_the_true_radial_velocity(nominal):
    calib = yaml.safe_load((nominal / 'calibration.yaml').read_text())
    radar = sensor_tf(calib, 'radar')
    frames, _ = ground_truth(nominal)
    errors = []
    for _, scan in messages(nominal, '/radar/points'):
        t_ns = stamp(scan) - START_NS
        if t_ns % 100_000_000:
            continue  # only scans taken at a camera frame time, where the ground truth is
        f = frames[t_ns // 33_333_333 if t_ns % 33_333_333 < 10 else round(t_ns / 33_333_333.333)]
        assert abs(f['stamp_ns'] - stamp(scan)) < 1000
        speed, yaw_rate = f['ego']['speed'], f['ego']['yaw_rate']
        pts = np.frombuffer(bytes(scan.data), dtype='<f4').reshape(-1, 5)
        for p in pts:
            base = radar @ np.array([p[0], p[1], p[2], 1.0])
            # On an actor (position), and of its material (RCS ±2 dB around the actor's own,
            # which does not depend on its class); ground clutter and false alarms are neither
            # (they lie on the ground plane, 0.1 m in base_link, and RCS may now coincide).
            # Two actors whose boxes and materials both fit the return are ambiguous: skipped.
            fits = [a for a in f['actors'] if abs(base[0] - a['center'][0]) <= a['size'][0] / 2 + 0.3
                    and abs(base[1] - a['center'][1]) <= max(a['size'][:2]) / 2 + 0.3
                    and abs(p[4] - a['rcs']) <= 2.0 and 0.15 <= base[2] <= a['size'][2] + 0.1]
            if len(fits) != 1:
                continue
            actor = fits[0]
            v_sensor = np.array([speed - yaw_rate * radar[1, 3], yaw_rate * radar[0, 3], 0.0])
            los = (base[:3] - radar[:3, 3]) / np.linalg.norm(base[:3] - radar[:3, 3])
            true = (np.array([*actor['velocity'], 0.0]) - v_sensor) @ los
            errors.append(p[3] - true)
    errors = np.array(errors)
    assert len(errors) > 50, len(errors)
    # Doppler noise σ = 0.1 m/s.
    assert abs(errors.mean()) < 0.05 and errors.std() < 0.2, (errors.mean(), errors.std())


def test_integrating_the_imu_reproduces_the_ego_trajectory(nominal):
    frames, _ = ground_truth(nominal)
    e0 = frames[0]['ego']
    x, y, yaw, v = e0['x'], e0['y'], e0['yaw'], e0['speed']
    dt = 0.005
    for _, m in messages(nominal, '/imu/data'):
        # IMU mounted level at base_link's yaw axis: x forward, z up.
        yaw_mid = yaw + 0.5 * m.angular_velocity.z * dt
        x += v * math.cos(yaw_mid) * dt
        y += v * math.sin(yaw_mid) * dt
        yaw += m.angular_velocity.z * dt
        v += m.linear_acceleration.x * dt
    truth = frames[-1]['ego']
    # The last IMU sample is at 9.995 s, the last frame at 9.9667 s: compare at the frame.
    t_last = frames[-1]['t']
    x -= v * math.cos(yaw) * (10.0 - t_last)
    y -= v * math.sin(yaw) * (10.0 - t_last)
    travelled = math.hypot(truth['x'], truth['y'])
    err = math.hypot(x - truth['x'], y - truth['y'])
    # Stated tolerance over 10 s (~75 m): 2 m position (bias ~0.02 m/s² and drift), 0.05 rad yaw.
    assert travelled > 60 and err < 2.0, (err, (x, y), truth)
    assert abs(yaw - truth['yaw']) < 0.05, (yaw, truth['yaw'])


def first_difference(a: bytes, b: bytes):
    """None when equal, else the first differing offset and the lengths (never a 60 MB diff)."""
    if a == b:
        return None
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return {'offset': at, 'lengths': (len(a), len(b)), 'a': a[at:at + 16].hex(), 'b': b[at:at + 16].hex()}


def test_same_seed_gives_identical_bytes(tmp_path):
    a = simulate(tmp_path / 'a', 'mixed', seed=5, duration=2.0)
    # The second run has glibc fill every fresh allocation with a byte pattern: a byte the
    # writer never set (CDR alignment padding in r2r's reused buffer once did) then differs
    # on every run, not only when the heap happens to hold different garbage.
    b = simulate(tmp_path / 'b', 'mixed', seed=5, duration=2.0, env={'MALLOC_PERTURB_': '165'})
    c = simulate(tmp_path / 'c', 'mixed', seed=6, duration=2.0)
    assert first_difference((a / 'a_0.mcap').read_bytes(), (b / 'b_0.mcap').read_bytes()) is None
    assert (a / 'ground_truth.jsonl').read_bytes() == (b / 'ground_truth.jsonl').read_bytes()
    assert (a / 'metadata.yaml').read_text() == (b / 'metadata.yaml').read_text().replace('b_0.mcap', 'a_0.mcap')
    assert first_difference((a / 'a_0.mcap').read_bytes(), (c / 'c_0.mcap').read_bytes()) is not None


EXPECTED = {
    'pedestrian_intrusion': [('zone_intrusion', None)],
    'collision_course': [('collision_risk', None)],
    'camera_blackout': [('sensor_degraded', 'camera')],
    'lidar_dropout': [('sensor_dropout', 'lidar')],
    'imu_impact': [('impact', 'imu')],
    'sensor_disagreement': [('sensor_disagreement', 'camera')],
    'mixed': [('zone_intrusion', None), ('collision_risk', None), ('sensor_degraded', 'camera'),
              ('sensor_dropout', 'lidar'), ('impact', 'imu'), ('sensor_disagreement', 'camera')],
}


@pytest.mark.parametrize('scenario', ['nominal'] + list(EXPECTED))
def test_each_scenario_holds_its_event(scenario, tmp_path):
    duration = 16.0 if scenario == 'mixed' else 10.0
    bag = simulate(tmp_path / scenario, scenario, seed=1, duration=duration)
    frames, events = ground_truth(bag)
    kinds = {(e['kind'], e['sensor']) for e in events}
    for want in EXPECTED.get(scenario, []):
        assert want in kinds, (want, kinds)
    if scenario == 'nominal':
        assert not kinds, kinds
    # The data shows what the ground truth says.
    for e in events:
        lo, hi = e['onset_ns'], e['offset_ns']
        if e['kind'] == 'sensor_dropout':
            assert not [t for t, _ in messages(bag, '/lidar/points') if lo <= t < hi]
        if e['kind'] == 'sensor_degraded':
            means = [np.frombuffer(bytes(m.data), np.uint8).mean() for t, m in messages(bag, '/camera/image_raw') if lo <= t < hi]
            assert means and max(means) < 20, means
        if e['kind'] == 'impact':
            peak = max(math.hypot(m.linear_acceleration.x, m.linear_acceleration.y) for t, m in messages(bag, '/imu/data')
                       if lo <= t < hi)
            assert peak > 60, peak
        if e['kind'] == 'sensor_disagreement':
            ghost = [a for f in frames if lo <= f['stamp_ns'] < hi for a in f['actors'] if a['id'] in e['actor_ids']]
            assert ghost and all(a['visible_pixels'] == 0 and a['camera_invisible'] for a in ghost)
    shutil.rmtree(bag, ignore_errors=True)


def test_training_export_images_and_boxes(tmp_path):
    export = tmp_path / 'train'
    simulate(tmp_path / 'bag', 'camera_blackout', 4, 6, '--export', str(export), '--export-every', '10', timeout=120)
    labels = [json.loads(line) for line in (export / 'labels.jsonl').read_text().splitlines()]
    # 18 frames at every 10th of 30 Hz; the three in the 5-6 s blackout are left out.
    assert len(labels) == 15
    assert all(not (1_700_000_005_000_000_000 <= x['stamp_ns'] < 1_700_000_008_000_000_000) for x in labels)
    bag_images = {stamp(m): bytes(m.data) for _, m in messages(tmp_path / 'bag', '/camera/image_raw')}
    checked = 0
    for entry in labels:
        data = (export / entry['image']).read_bytes()
        header = b'P6\n640 480\n255\n'
        assert data.startswith(header) and len(data) == len(header) + 640 * 480 * 3
        # The exported image is the frame the bag holds at that stamp.
        assert data[len(header):] == bag_images[entry['stamp_ns']]
        for b in entry['boxes']:
            x0, y0, x1, y1 = b['box']
            assert 0 <= x0 <= x1 < 640 and 0 <= y0 <= y1 < 480 and b['visible_pixels'] <= (x1 - x0 + 1) * (y1 - y0 + 1)
            assert b['shape'] in SHAPES[b['class']], b
            checked += 1
    assert checked >= 10


SHAPES = {'person': {'pedestrian'}, 'vehicle': {'car', 'van', 'truck'}, 'obstacle': {'crate', 'cone', 'barrier'}}


def test_the_seed_varies_the_world_not_the_class_paint(tmp_path):
    """Two seeds of one scenario: other bodies, sizes, materials, sky and light; the same
    script (the same actors and classes, near the same places)."""
    worlds = []
    for seed in (11, 12):
        bag = simulate(tmp_path / f's{seed}', 'nominal', seed, 0.5, timeout=120)
        lines = [json.loads(line) for line in (bag / 'ground_truth.jsonl').read_text().splitlines()]
        first = next(x for x in lines if x['type'] == 'frame')
        image = next(m for _, m in messages(bag, '/camera/image_raw'))
        worlds.append((lines[0]['look'], {a['id']: a for a in first['actors']},
                       np.frombuffer(bytes(image.data), np.uint8).astype(int)))
    (look_a, actors_a, img_a), (look_b, actors_b, img_b) = worlds
    assert look_a != look_b
    assert actors_a.keys() == actors_b.keys()
    for i in actors_a:
        a, b = actors_a[i], actors_b[i]
        assert a['class'] == b['class'] and a['shape'] in SHAPES[a['class']] and b['shape'] in SHAPES[b['class']]
        assert a['size'] != b['size'] and a['lidar_intensity'] != b['lidar_intensity'] and a['rcs'] != b['rcs']
        assert math.dist(a['center'][:2], b['center'][:2]) < 2.2  # each within ±1 m along, ±0.4 m across
    # Not only noise: the images differ by far more than the pixel noise (σ ≤ 7 levels).
    assert np.abs(img_a - img_b).mean() > 15

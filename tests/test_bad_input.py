"""Malformed input to each ingest node over DDS (rclpy publisher): every kind is rejected
with its own counter on /diagnostics, the node stays up, and valid messages sent after
it still come through."""
from __future__ import annotations

import copy
import math
import struct
import time

import pytest
from conftest import binary, diagnostics_values

FLOAT32, FLOAT64, UINT8 = 7, 8, 2

# `make test-fast` runs this file (seconds per test).
pytestmark = pytest.mark.fast


def _header(msg, sec, frame):
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = 0
    msg.header.frame_id = frame


def image(sec, w=640, h=480, encoding='rgb8'):
    from sensor_msgs.msg import Image

    m = Image()
    _header(m, sec, 'camera_optical')
    m.width, m.height, m.encoding, m.step = w, h, encoding, w * 3
    m.data = bytes(w * h * 3)
    return m


def camera_info(sec):
    from sensor_msgs.msg import CameraInfo

    m = CameraInfo()
    _header(m, sec, 'camera_optical')
    m.width, m.height, m.distortion_model = 640, 480, 'plumb_bob'
    m.d = [0.0] * 5
    m.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    return m


def cloud(sec, names, points, frame, big_endian=False):
    from sensor_msgs.msg import PointCloud2, PointField

    m = PointCloud2()
    _header(m, sec, frame)
    m.fields = [PointField(name=n, offset=4 * i, datatype=FLOAT32, count=1) for i, n in enumerate(names)]
    fmt = ('>' if big_endian else '<') + 'f' * len(names)
    m.data = b''.join(struct.pack(fmt, *p) for p in points)
    m.height, m.width, m.point_step = 1, len(points), 4 * len(names)
    m.row_step = m.point_step * len(points)
    m.is_bigendian, m.is_dense = big_endian, True
    return m


XYZI = ['x', 'y', 'z', 'intensity']
RADAR = ['x', 'y', 'z', 'doppler', 'rcs']


def lidar(sec, **kw):
    return cloud(sec, XYZI, [(10.0 + i, 0.5 * i, 0.0, 7.0) for i in range(20)], 'lidar_link', **kw)


def radar(sec):
    return cloud(sec, RADAR, [(20.0, 1.0, 0.0, -3.0, 5.0)] * 4, 'radar_link')


def imu(sec):
    from sensor_msgs.msg import Imu

    m = Imu()
    _header(m, sec, 'imu_link')
    m.orientation_covariance[0] = -1.0
    m.linear_acceleration.z = 9.81
    return m


def mutate(fn):
    """A bad message = a valid one with one thing broken."""
    def make(valid):
        m = copy.deepcopy(valid)
        fn(m)
        return m
    return make


def set_(**kw):
    return mutate(lambda m: [setattr(m, k, v) for k, v in kw.items()])


def header_cases(frame):
    return [
        ('zero_stamp', mutate(lambda m: (setattr(m.header.stamp, 'sec', 0), setattr(m.header.stamp, 'nanosec', 0)))),
        ('stamp_backwards', mutate(lambda m: setattr(m.header.stamp, 'sec', 1))),
        ('unknown_frame_id', mutate(lambda m: setattr(m.header, 'frame_id', frame + '_typo'))),
    ]


def field(m, i, **kw):
    f = copy.deepcopy(m.fields)
    for k, v in kw.items():
        setattr(f[i], k, v)
    m.fields = f


def nan_points(m):
    n = m.width
    m.data = struct.pack('<' + 'f' * 4 * n, *([math.nan] * 4 * n))


CLOUD_CASES = [
    ('missing_field', mutate(lambda m: setattr(m, 'fields', m.fields[:2]))),
    ('bad_field_datatype', mutate(lambda m: field(m, 0, datatype=42))),
    ('field_out_of_bounds', mutate(lambda m: field(m, 1, offset=m.point_step - 2))),
    ('fields_overlap', mutate(lambda m: field(m, 2, offset=2))),
    ('bad_point_step', set_(point_step=0)),
    ('bad_row_step', mutate(lambda m: setattr(m, 'row_step', m.row_step - 4))),
    ('data_size_mismatch', mutate(lambda m: setattr(m, 'data', bytes(m.data)[:-4]))),
    ('data_size_mismatch', mutate(lambda m: (setattr(m, 'width', m.width + 1), setattr(m, 'row_step', m.row_step + m.point_step)))),
    ('empty', mutate(lambda m: (setattr(m, 'width', 0), setattr(m, 'row_step', 0), setattr(m, 'data', b'')))),
]

CASES = {
    'camera_ingest': ('/camera/image_raw', '/sensors/camera', image, 'camera_ingest: camera ingest', [
        ('unsupported_encoding', set_(encoding='yuv422')),
        ('bad_step', mutate(lambda m: setattr(m, 'step', 100))),
        ('data_size_mismatch', mutate(lambda m: setattr(m, 'data', bytes(m.data)[:-1]))),
        ('data_size_mismatch', mutate(lambda m: setattr(m, 'height', 479))),
        ('empty', mutate(lambda m: (setattr(m, 'width', 0), setattr(m, 'step', 0), setattr(m, 'data', b'')))),
        ('size_mismatch_intrinsics', lambda v: image(v.header.stamp.sec, w=320, h=240)),
        # A header claiming 48 megapixels over a VGA buffer.
        ('data_size_mismatch', set_(width=8000, height=6000, step=24000)),
        # width x 3 past u32: the step a 32-bit product would wrap to.
        ('bad_step', set_(width=0x60000000, step=(0x60000000 * 3) % 2**32)),
    ] + header_cases('camera_optical')),
    'lidar_ingest': ('/lidar/points', '/sensors/lidar', lidar, 'lidar_ingest: lidar ingest',
                     CLOUD_CASES + [('non_finite', mutate(nan_points))] + header_cases('lidar_link')),
    'radar_ingest': ('/radar/points', '/sensors/radar', radar, 'radar_ingest: radar ingest',
                     CLOUD_CASES[:-1] + header_cases('radar_link')),
    'imu_ingest': ('/imu/data', '/sensors/imu', imu, 'imu_ingest: imu ingest', [
        ('non_finite', mutate(lambda m: setattr(m.linear_acceleration, 'x', math.nan))),
        ('non_finite', mutate(lambda m: setattr(m.angular_velocity, 'z', math.inf))),
        ('bad_orientation', mutate(lambda m: (m.orientation_covariance.__setitem__(0, 0.01), setattr(m.orientation, 'w', 0.5)))),
        # Finite but beyond any sensor: integrated, one would leave the orientation NaN for good.
        ('impossible_value', mutate(lambda m: setattr(m.angular_velocity, 'z', 1e30))),
        ('impossible_value', mutate(lambda m: setattr(m.linear_acceleration, 'x', -1e12))),
    ] + header_cases('imu_link')),
}


def msg_type(node):
    from sensor_msgs.msg import Image, Imu, PointCloud2
    return {'camera_ingest': Image, 'imu_ingest': Imu}.get(node, PointCloud2)


@pytest.mark.parametrize('node', list(CASES))
def test_malformed_messages_are_rejected_and_counted(node, procs, ros):
    from diagnostic_msgs.msg import DiagnosticArray

    raw, out, make_valid, status, cases = CASES[node]
    proc = procs([binary(node), '--ros-args', '-p', 'diagnostics_period:=0.2'])
    probe = ros()
    probe.subscribe(out, msg_type(node))
    probe.subscribe('/diagnostics', DiagnosticArray)
    pub = probe.publisher(raw, msg_type(node))
    probe.wait_matched(pub, timeout=30)
    probe.wait_publishers(out, timeout=30)

    sec = 10
    expected: dict[str, int] = {}
    delivered = 0

    def send_valid():
        nonlocal sec, delivered
        sec += 1
        pub.publish(make_valid(sec))
        delivered += 1
        probe.wait_for(lambda: probe.count(out) == delivered, 10,
                       f'{node}: valid message #{delivered} through; diagnostics: {diagnostics_values(probe, status)}')

    sec = probe.publish_until_through(pub, make_valid, out, stamp=sec)
    time.sleep(0.3)
    delivered = probe.count(out)
    for reason, make_bad in cases:
        pub.publish(make_bad(make_valid(sec + 1)))
        expected[reason] = expected.get(reason, 0) + 1

        def counted():
            d = diagnostics_values(probe, status)
            return int(d.get(f'rejected.{reason}', 0)) == expected[reason]

        probe.wait_for(counted, 10, f'{node}: rejected.{reason} = {expected[reason]}')
        assert proc.alive(), proc.output()
        send_valid()
    probe.wait_for(lambda: diagnostics_values(probe, status).get('accepted') == str(delivered), 10, 'final diagnostics')
    d = diagnostics_values(probe, status)
    assert int(d['rejected']) == sum(expected.values())
    assert int(d['received']) == int(d['accepted']) + int(d['rejected'])
    assert proc.alive()


def test_a_far_future_stamp_does_not_lock_a_stream_out(procs, ros):
    """One message stamped in 2033 among ones stamped at 11 s, 12 s, ...: the stream's own
    messages are refused as going backwards a few times (RESYNC_AFTER = 5), then followed
    again, counted as one stamp_resync; the node's orientation output stays finite."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Imu

    status = 'imu_ingest: imu ingest'
    proc = procs([binary('imu_ingest'), '--ros-args', '-p', 'diagnostics_period:=0.2'])
    probe = ros()
    probe.subscribe('/sensors/imu', Imu)
    probe.subscribe('/diagnostics', DiagnosticArray)
    pub = probe.publisher('/imu/data', Imu)
    probe.wait_matched(pub, timeout=30)
    probe.wait_publishers('/sensors/imu', timeout=30)
    sec = probe.publish_until_through(pub, imu, '/sensors/imu', stamp=10)
    time.sleep(0.3)
    before = probe.count('/sensors/imu')
    pub.publish(imu(2_000_000_000))
    probe.wait_for(lambda: probe.count('/sensors/imu') == before + 1, 10, 'the future-stamped sample is published')
    for k in range(1, 16):
        pub.publish(imu(sec + k))
        time.sleep(0.02)

    def settled():
        d = diagnostics_values(probe, status)
        return d.get('rejected.stamp_backwards') == '5' and d.get('stamp_resync') == '1'

    probe.wait_for(settled, 10, f'5 refused then resynced: {diagnostics_values(probe, status)}')
    probe.wait_for(lambda: probe.count('/sensors/imu') == before + 1 + 10, 10, 'the last 10 samples come through')
    last = probe.get('/sensors/imu')[-1]
    assert last.header.stamp.sec == sec + 15
    q = last.orientation
    assert all(math.isfinite(v) for v in (q.x, q.y, q.z, q.w))
    assert proc.alive(), proc.output()


def test_camera_info_malformed(procs, ros):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo

    proc = procs([binary('camera_ingest'), '--ros-args', '-p', 'diagnostics_period:=0.2'])
    probe = ros()
    probe.subscribe('/diagnostics', DiagnosticArray)
    pub = probe.publisher('/camera/camera_info', CameraInfo)
    probe.wait_matched(pub, timeout=30)
    first = [10]

    def info_through():
        first[0] += 1
        pub.publish(camera_info(first[0]))
        time.sleep(0.3)
        return diagnostics_values(probe, 'camera_ingest: camera_info').get('accepted', '0') != '0'

    probe.wait_for(info_through, 20, 'first camera_info through')
    base = int(diagnostics_values(probe, 'camera_ingest: camera_info')['accepted'])
    bad = [
        ('bad_distortion', lambda m: setattr(m, 'd', [0.0] * 4)),
        ('bad_intrinsics', lambda m: m.k.__setitem__(0, 0.0)),
        ('non_finite', lambda m: m.k.__setitem__(2, math.nan)),
        ('unknown_frame_id', lambda m: setattr(m.header, 'frame_id', 'camera')),
    ]
    sec = first[0] + 1
    for reason, breaker in bad:
        m = camera_info(sec)
        breaker(m)
        pub.publish(m)
        probe.wait_for(lambda: diagnostics_values(probe, 'camera_ingest: camera_info').get(f'rejected.{reason}') == '1', 10,
                       f'camera_info rejected.{reason}')
        sec += 1
        pub.publish(camera_info(sec))
        sec += 1
    probe.wait_for(lambda: diagnostics_values(probe, 'camera_ingest: camera_info').get('accepted') == str(base + 4), 10,
                   'the 4 valid ones accepted')
    assert proc.alive()


def test_big_endian_cloud_decodes_like_little_endian(procs, ros):
    """is_bigendian is honoured, not ignored: the same points come out either way."""
    from sensor_msgs.msg import PointCloud2

    procs([binary('lidar_ingest')])
    probe = ros()
    probe.subscribe('/sensors/lidar', PointCloud2)
    pub = probe.publisher('/lidar/points', PointCloud2)
    probe.wait_matched(pub, timeout=30)
    probe.wait_publishers('/sensors/lidar', timeout=30)
    last = probe.publish_until_through(pub, lidar, '/sensors/lidar', stamp=19)
    time.sleep(0.3)
    n = probe.count('/sensors/lidar')
    pub.publish(lidar(last + 1, big_endian=True))
    probe.wait_for(lambda: probe.count('/sensors/lidar') == n + 1, 10, 'the big-endian cloud')
    le, be = probe.get('/sensors/lidar')[n - 1:]
    assert bytes(le.data) == bytes(be.data) and le.width == 20


@pytest.mark.parametrize('model', ['corrupted', 'missing'])
def test_fusion_node_starts_degraded_without_its_detector(procs, ros, tmp_path, model):
    """A missing or corrupted camera model does not leave the robot without perception:
    fusion_node starts on LiDAR and radar alone, says so on /diagnostics (ERROR) and in one
    model_degraded event (detector_unavailable) naming the file; with detector_required it
    refuses to start, with the same reason."""
    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import AnomalyEvent, FusedObjectArray
    from sensor_msgs.msg import PointCloud2

    manifest = tmp_path / 'detector.json'
    if model == 'corrupted':
        manifest.write_bytes(b'{"sha256": "00", "weights": "x"')
    node = procs([binary('fusion_node'), '--ros-args', '-p', f'detector_weights:={manifest}',
                  '-p', 'diagnostics_period:=0.2'], name='fusion_node')
    probe = ros()
    for topic, kind in (('/anomaly/events', AnomalyEvent), ('/fusion/objects', FusedObjectArray),
                        ('/diagnostics', DiagnosticArray)):
        probe.subscribe(topic, kind)
    pub = probe.publisher('/sensors/lidar', PointCloud2)
    probe.wait_matched(pub, 1, timeout=30)
    # A box of points 6 m ahead, 10 sweeps: LiDAR-only sets, released partial.
    points = [(6.0 + 0.1 * i, -0.4 + 0.1 * j, 0.2 + 0.2 * k, 50.0) for i in range(5) for j in range(8) for k in range(6)]
    for _ in range(20):
        now = time.time_ns()  # node clock time: sets within their deadlines
        m = cloud(0, XYZI, points, 'base_link')
        m.header.stamp.sec, m.header.stamp.nanosec = now // 10**9, now % 10**9
        pub.publish(m)
        time.sleep(0.1)
    probe.wait_for(lambda: any(e.rule == 'detector_unavailable' for e in probe.get('/anomaly/events')), 20,
                   f'a detector_unavailable event; log:\n{node.output()[-2000:]}')
    events = [e for e in probe.get('/anomaly/events') if e.rule == 'detector_unavailable']
    assert len(events) == 1 and events[0].kind == AnomalyEvent.KIND_MODEL_DEGRADED and events[0].severity == AnomalyEvent.ERROR
    error = {kv.key: kv.value for kv in events[0].evidence}['error']
    assert str(manifest) in error, error
    assert node.alive() and probe.count('/fusion/objects') > 0
    status = [s for a in probe.get('/diagnostics') for s in a.status if s.name.endswith('fusion_node: fusion')]
    assert status and status[-1].level == b'\x02' and 'camera detector unavailable' in status[-1].message, status[-1:]
    # Required: no start, the same reason, exit status 1.
    strict = procs([binary('fusion_node'), '--ros-args', '-r', '__node:=fusion_node_strict',
                    '-p', f'detector_weights:={manifest}', '-p', 'detector_required:=true'], name='strict')
    assert strict.p.wait(30) == 1
    assert str(manifest) in strict.output() and 'panicked' not in strict.output()


NODES = ['camera_ingest', 'lidar_ingest', 'radar_ingest', 'imu_ingest', 'fusion_node', 'summarizer']


@pytest.mark.parametrize('case', ['params_yaml', 'remap', 'calibration_yaml', 'calibration_missing'])
def test_bad_files_and_arguments_give_a_one_line_error_not_a_panic(tmp_path, case):
    """Every node, given a malformed parameter file or remap rule (rcl refuses it, and r2r
    would panic), or a calibration file that is not the schema or not there: exit status 1,
    an error naming the file and what is wrong, never a panic."""
    import subprocess

    from conftest import child_env

    bad_params = tmp_path / 'params.yaml'
    bad_params.write_text('a: [1,\n')
    bad_calibration = tmp_path / 'calibration.yaml'
    bad_calibration.write_text('base_frame: base_link\nsensors:\n  camera: {frame_id: cam, translation: [1, 2]}\n')
    args, expect = {
        'params_yaml': (['--params-file', str(bad_params)], f"invalid ROS arguments: Couldn't parse params file: '--params-file {bad_params}'"),
        'remap': (['-r', 'bad:='], "invalid ROS arguments: Couldn't parse remap rule: '-r bad:='"),
        'calibration_yaml': (['-p', f'calibration:={bad_calibration}'],
                             f'calibration {bad_calibration} is not valid YAML for the schema: sensors.camera.translation: invalid length 2'),
        'calibration_missing': (['-p', f'calibration:={tmp_path}/none.yaml'], f'cannot read calibration {tmp_path}/none.yaml'),
    }[case]
    for name in NODES:
        if case.startswith('calibration') and name == 'summarizer':
            continue  # the summarizer reads no calibration
        res = subprocess.run([binary(name), '--ros-args', *args], capture_output=True, text=True, timeout=60,
                             env=child_env(RUST_BACKTRACE='0'))
        out = res.stdout + res.stderr
        assert res.returncode == 1, (name, res.returncode, out[-2000:])
        assert expect in out and 'panicked' not in out, (name, out[-2000:])


@pytest.mark.parametrize('sensor, expect', [
    ('radar', "parameter sensor: 'radar' is declared as a radar in the calibration; lidar_ingest serves a lidar"),
    ('roof', "declares no sensor 'roof' (it declares: camera, imu, lidar, radar)"),
])
def test_an_ingest_node_serves_only_a_declared_sensor_of_its_kind(sensor, expect):
    """One ingest node per declared sensor (issue 19): its `sensor` parameter must name a
    sensor of the calibration, of the node's kind; anything else is one clear start-up error."""
    import subprocess

    from conftest import child_env

    res = subprocess.run([binary('lidar_ingest'), '--ros-args', '-p', f'sensor:={sensor}', '-p', 'tf_wait:=0.0'],
                         capture_output=True, text=True, timeout=60, env=child_env(RUST_BACKTRACE='0'))
    out = res.stdout + res.stderr
    assert res.returncode == 1 and expect in out and 'panicked' not in out, (res.returncode, out[-2000:])


def test_a_stream_that_stops_and_comes_back_raises_dropout_then_recovery(procs, ros):
    """Radar goes silent for 1.5 s while LiDAR goes on: one sensor_dropout (ERROR), then one
    stream_recovered (INFO) saying how long it was gone; objects keep coming throughout."""
    from fusion_msgs.msg import AnomalyEvent, FusedObjectArray
    from sensor_msgs.msg import PointCloud2

    node = procs([binary('fusion_node'), '--ros-args', '-p', 'detector:=none'], name='fusion_node')
    probe = ros()
    probe.subscribe('/anomaly/events', AnomalyEvent)
    probe.subscribe('/fusion/objects', FusedObjectArray)
    lidar = probe.publisher('/sensors/lidar', PointCloud2)
    radar = probe.publisher('/sensors/radar', PointCloud2)
    probe.wait_matched(lidar, 1, timeout=30)
    probe.wait_matched(radar, 1, timeout=30)
    points = [(6.0 + 0.1 * i, -0.4 + 0.1 * j, 0.2 + 0.2 * k, 50.0) for i in range(5) for j in range(8) for k in range(6)]
    objects_while_silent = 0
    for n in range(50):  # 5 s at 10 Hz; radar silent from 1.5 s to 3.0 s
        now = time.time_ns()
        for pub, names, pts in ((lidar, XYZI, points), (radar, RADAR, [(6.2, 0.0, 0.5, 0.0, 12.0)])):
            if pub is radar and 15 <= n < 30:
                continue
            m = cloud(0, names, pts, 'base_link')
            m.header.stamp.sec, m.header.stamp.nanosec = now // 10**9, now % 10**9
            pub.publish(m)
        if n == 29:
            objects_while_silent = probe.count('/fusion/objects')
        time.sleep(0.1)
    probe.wait_for(lambda: any(e.rule == 'stream_recovered' for e in probe.get('/anomaly/events')), 10,
                   f'a recovery event; events {[(e.kind, e.rule) for e in probe.get("/anomaly/events")]}')
    radar_events = [e for e in probe.get('/anomaly/events') if list(e.sensors) == ['radar']]
    rules = [(e.rule, e.severity) for e in radar_events]
    # Dropouts and recoveries alternate (a loaded machine may add a short pair of its own).
    assert rules[::2] == [('stream_silent', AnomalyEvent.ERROR)] * len(rules[::2]), rules
    assert rules[1::2] == [('stream_recovered', AnomalyEvent.INFO)] * len(rules[1::2]), rules
    gaps = [float({kv.key: kv.value for kv in e.evidence}['silent_s']) for e in radar_events[1::2]]
    assert any(1.3 < g < 1.9 for g in gaps), gaps
    assert objects_while_silent >= 20 and probe.count('/fusion/objects') > objects_while_silent
    assert node.alive()


def test_under_sim_time_sets_wait_for_the_first_clock(procs, ros):
    """With use_sim_time the node clock reads 0 until /clock first arrives: data that comes
    before it is dropped and counted (dropped.no_clock_yet.<sensor> on /diagnostics), not
    published with a latency of -1.7e12 ms. Once /clock runs, sets flow with sane latencies."""
    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import FusedObjectArray
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import PointCloud2

    node = procs([binary('fusion_node'), '--ros-args', '-p', 'detector:=none', '-p', 'use_sim_time:=true'],
                 name='fusion_node')
    probe = ros()
    probe.subscribe('/fusion/objects', FusedObjectArray)
    probe.subscribe('/diagnostics', DiagnosticArray)
    lidar = probe.publisher('/sensors/lidar', PointCloud2)
    radar = probe.publisher('/sensors/radar', PointCloud2)
    clock = probe.publisher('/clock', Clock)
    for pub in (lidar, radar, clock):
        probe.wait_matched(pub, 1, timeout=30)
    points = [(6.0 + 0.1 * i, -0.4 + 0.1 * j, 0.2 + 0.2 * k, 50.0) for i in range(5) for j in range(8) for k in range(6)]
    t0 = 1_700_000_000 * 10**9

    def publish(n, with_clock):
        """One 100 ms step: a LiDAR sweep and a radar scan stamped at its start, then (with
        the clock) /clock every 10 ms through it, as `fusion_bag play --clock 100` would."""
        stamp = t0 + n * 100_000_000
        for pub, names, pts in ((lidar, XYZI, points), (radar, RADAR, [(6.2, 0.0, 0.5, 0.0, 12.0)])):
            m = cloud(0, names, pts, 'base_link')
            m.header.stamp.sec, m.header.stamp.nanosec = stamp // 10**9, stamp % 10**9
            pub.publish(m)
        for k in range(10):
            if with_clock:
                c = Clock()
                t = stamp + k * 10_000_000
                c.clock.sec, c.clock.nanosec = t // 10**9, t % 10**9
                clock.publish(c)
            time.sleep(0.01)

    def counter(key):
        values = [int(kv.value) for m in probe.get('/diagnostics') for s in m.status if s.hardware_id == 'fusion'
                  for kv in s.values if kv.key == key]
        return max(values, default=0)

    for n in range(15):  # 1.5 s of data, no /clock
        publish(n, with_clock=False)
    probe.wait_for(lambda: counter('dropped.no_clock_yet.lidar') >= 10, 5,
                   f'dropped.no_clock_yet counted; {[(kv.key, kv.value) for m in probe.get("/diagnostics")[-1:] for s in m.status for kv in s.values if "dropped" in kv.key]}')
    assert probe.count('/fusion/objects') == 0, [o.latency_ms for o in probe.get('/fusion/objects')]
    for n in range(15, 45):  # 3 s with /clock
        publish(n, with_clock=True)
    probe.wait_for(lambda: probe.count('/fusion/objects') >= 10, 5, 'objects once /clock runs')
    latencies = sorted(o.latency_ms for o in probe.get('/fusion/objects'))
    assert 0.0 <= latencies[0] and latencies[-1] <= 100.0, latencies
    assert node.alive()

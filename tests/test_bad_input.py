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

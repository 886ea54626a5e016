"""The four ingest nodes as separate processes over real DDS: a rosbags bag played with
fusion_bag, the outputs received by rclpy."""
from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import binary, child_env, diagnostics_values
from test_bad_input import imu, radar

NODES = ['camera_ingest', 'lidar_ingest', 'radar_ingest', 'imu_ingest']
OUT = {'camera_ingest': ('/sensors/camera', '/camera/image_raw'), 'lidar_ingest': ('/sensors/lidar', '/lidar/points'),
       'radar_ingest': ('/sensors/radar', '/radar/points'), 'imu_ingest': ('/sensors/imu', '/imu/data')}
STATUS = {'camera_ingest': 'camera_ingest: camera ingest', 'lidar_ingest': 'lidar_ingest: lidar ingest',
          'radar_ingest': 'radar_ingest: radar ingest', 'imu_ingest': 'imu_ingest: imu ingest'}

# `make test-fast` runs this file (seconds per test).
pytestmark = pytest.mark.fast


def start_nodes(procs, env=None, *ros_args):
    return {n: procs([binary(n), '--ros-args', *ros_args], env=env) for n in NODES}


def subscribe_outputs(probe):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, Imu, PointCloud2

    probe.subscribe('/sensors/camera', Image)
    probe.subscribe('/sensors/lidar', PointCloud2)
    probe.subscribe('/sensors/radar', PointCloud2)
    probe.subscribe('/sensors/imu', Imu)
    probe.subscribe('/diagnostics', DiagnosticArray)


def test_bag_through_four_ingest_nodes(procs, ros, nominal_bag):
    bag, counts = nominal_bag
    # HOME unset: rcl must fall back to a log directory, not fail.
    nodes = start_nodes(procs, child_env(HOME=None))
    probe = ros()
    subscribe_outputs(probe)
    for node, (out, raw) in OUT.items():
        probe.wait_publishers(out, timeout=30)
        probe.wait_subscribers(raw, timeout=30)
    player = procs([binary('fusion_bag'), 'play', str(bag), '--wait-for-subscribers', '--delay', '0.5'])
    assert player.p.wait(60) == 0, player.output()
    def settled(n):
        out, raw = OUT[n]
        d = diagnostics_values(probe, STATUS[n])
        return d and int(d['received']) == counts[raw] and int(d['accepted']) == probe.count(out)

    probe.wait_for(lambda: all(settled(n) for n in NODES), 20,
                   f'every message received and accounted for: outputs { {n: probe.count(OUT[n][0]) for n in NODES} }, '
                   f'diagnostics { {n: diagnostics_values(probe, STATUS[n]) for n in NODES} }')
    for n in NODES:
        assert nodes[n].alive(), nodes[n].output()
        out, raw = OUT[n]
        d = {k: float(v) for k, v in diagnostics_values(probe, STATUS[n]).items()}
        # Every message played reached the node; each one was published or counted as
        # dropped (drop-oldest when the worker falls behind: on a loaded 2-core CI
        # machine that can happen, never silently, and only to a few frames).
        assert d['rejected'] == 0, (n, d)
        assert d['accepted'] + d['dropped.queue_full'] == counts[raw], (n, d)
        assert probe.count(out) == d['accepted']
        assert d['dropped.queue_full'] <= 0.05 * counts[raw], (n, d)
        assert d['latency_p99_ms'] > 0.0
    # Outputs are what the contract says: rgb8 camera frames, clouds and IMU in base_link.
    img = probe.get('/sensors/camera')[0]
    assert (img.encoding, img.width, img.height, img.step) == ('rgb8', 640, 480, 1920)
    assert img.header.frame_id == 'camera_optical'
    lidar = probe.get('/sensors/lidar')[0]
    assert lidar.header.frame_id == 'base_link'
    assert [f.name for f in lidar.fields] == ['x', 'y', 'z', 'intensity', 't']
    pts = np.frombuffer(bytes(lidar.data), dtype='<f4').reshape(-1, 5)
    # The ground lies 1.8 m below the LiDAR, which is mounted 1.8 m up: z ≈ 0 in base_link.
    ground = pts[np.hypot(pts[:, 0] - 1.0, pts[:, 1]) < 10.0]
    assert len(ground) > 1000 and abs(float(np.median(ground[:, 2]))) < 0.1
    imu = probe.get('/sensors/imu')[-1]
    assert imu.header.frame_id == 'base_link'
    assert abs(imu.linear_acceleration.z - 9.81) < 0.5
    # Orientation filled in by the filter (the raw IMU has none): level, and the yaw is
    # the integrated 0.1 rad/s over the 3 s bag.
    q = imu.orientation
    assert abs(q.x) < 0.01 and abs(q.y) < 0.01, q
    assert abs(2 * np.arcsin(q.z) - 0.3) < 0.02, q
    cam_info = diagnostics_values(probe, 'camera_ingest: camera_info')
    assert int(cam_info['accepted']) == counts['/camera/camera_info']


def test_remapped_topics_and_node_name(procs, ros):
    from sensor_msgs.msg import Imu

    node = procs([binary('imu_ingest'), '--ros-args', '-r', '__node:=imu_front', '-r', '/imu/data:=/front/imu',
                  '-r', '/sensors/imu:=/front/imu_base'])
    probe = ros()
    probe.subscribe('/front/imu_base', Imu)
    probe.wait_publishers('/front/imu_base', timeout=30)
    probe.wait_matched(pub := probe.publisher('/front/imu', Imu), timeout=30)
    probe.wait_for(lambda: 'imu_front' in probe.node.get_node_names(), 20, 'node /imu_front in the graph')
    last = probe.publish_until_through(pub, imu, '/front/imu_base', stamp=100)
    n = probe.count('/front/imu_base')
    for i in range(5):
        pub.publish(imu(last + 1 + i))
        time.sleep(0.02)
    probe.wait_for(lambda: probe.count('/front/imu_base') == n + 5, 10, 'five more on the remapped output')
    assert node.alive()


def radar_through(probe):
    """Publishes radar clouds (four targets at (20, 1, 0) in radar_link) until one comes out
    of radar_ingest; returns the publisher and the output's points (x, y, z, doppler, rcs)."""
    from sensor_msgs.msg import PointCloud2

    probe.subscribe('/sensors/radar', PointCloud2)
    pub = probe.publisher('/radar/points', PointCloud2)
    probe.wait_matched(pub, timeout=30)
    probe.wait_publishers('/sensors/radar', timeout=30)
    probe.publish_until_through(pub, radar, '/sensors/radar')
    return pub, np.frombuffer(bytes(probe.get('/sensors/radar')[0].data), dtype='<f4').reshape(-1, 5)


def test_params_file_calibration_and_live_filters_reach_the_node(tmp_path, procs, ros):
    """Parameters from config/ingest.yaml and from -p overrides are what the node reports
    through its parameter services, the calibration file it names is what it applies, and a
    filter set on the running node applies to the next cloud."""
    from rcl_interfaces.srv import GetParameters

    from conftest import ROOT

    calib = (ROOT / 'config' / 'calibration.yaml').read_text()
    moved = tmp_path / 'calibration.yaml'
    # Radar mounted 3.0 m forward instead of 2.0 m.
    moved.write_text(calib.replace('radar: {frame_id: radar_link, translation: [2.0, 0.0, 0.5]',
                                   'radar: {frame_id: radar_link, translation: [3.0, 0.0, 0.5]'))
    assert moved.read_text() != calib
    procs([binary('radar_ingest'), '--ros-args', '--params-file', str(ROOT / 'config' / 'ingest.yaml'),
           '-p', f'calibration:={moved}', '-p', 'min_rcs:=0.0'])
    probe = ros()
    client = probe.node.create_client(GetParameters, '/radar_ingest/get_parameters')
    assert client.wait_for_service(timeout_sec=30)
    req = GetParameters.Request(names=['queue_size', 'min_rcs', 'max_range', 'calibration'])
    fut = client.call_async(req)
    probe.wait_for(fut.done, 10, 'get_parameters reply')
    v = fut.result().values
    assert (v[0].integer_value, v[1].double_value, v[2].double_value, v[3].string_value) == (16, 0.0, 200.0, str(moved))

    pub, pts = radar_through(probe)
    # (20, 1, 0) in radar_link → x = 20 + 3.0 in base_link; rcs 5 ≥ min_rcs 0 keeps all 4.
    assert len(pts) == 4 and np.allclose(pts[0], [23.0, 1.0, 0.5, -3.0, 5.0])

    # `ros2 param set` on the running node: a filter (min_rcs) applies from the next cloud
    # on, so the same four targets of RCS 5 are now filtered; a start-up parameter
    # (queue_size) is refused with its reason and keeps its value.
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    setter = probe.node.create_client(SetParameters, '/radar_ingest/set_parameters')
    assert setter.wait_for_service(timeout_sec=30)

    def set_param(name, value):
        v = (ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value) if isinstance(value, float)
             else ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value))
        fut = setter.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=v)]))
        probe.wait_for(fut.done, 10, 'set_parameters reply')
        return fut.result().results[0]

    r = set_param('min_rcs', 6.0)
    assert r.successful, r.reason
    r = set_param('queue_size', 8)
    assert not r.successful and 'start-up' in r.reason, r.reason
    r = set_param('max_non_finite_ratio', 1.5)
    assert not r.successful and 'within [0, 1]' in r.reason, r.reason
    n = probe.count('/sensors/radar')
    stamp = int(probe.get('/sensors/radar')[-1].header.stamp.sec) + 1
    pub.publish(radar(stamp))
    probe.wait_for(lambda: probe.count('/sensors/radar') > n, 10, 'the next radar cloud')
    assert probe.get('/sensors/radar')[-1].width == 0, 'RCS 5 < min_rcs 6: every target filtered'
    fut = client.call_async(GetParameters.Request(names=['min_rcs', 'queue_size']))
    probe.wait_for(fut.done, 10, 'get_parameters reply')
    v = fut.result().values
    assert (v[0].double_value, v[1].integer_value) == (6.0, 16)


def test_a_mount_latched_on_tf_static_places_the_sensor_without_a_calibration_file(procs, ros):
    """Extrinsics from tf2 (issue 19): an rclpy node latches the radar's mount on /tf_static
    as robot_state_publisher does, through a chain (base_link → bumper → radar_link) that
    is not the built-in pose; radar_ingest, given no calibration file, applies it. A LiDAR
    whose frame that tf does not hold is one clear start-up error."""
    from geometry_msgs.msg import TransformStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    probe = ros()

    def mount(parent, child, xyz):
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = xyz
        t.transform.rotation.w = 1.0
        return t

    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    tf_pub = probe.publisher('/tf_static', TFMessage, latched)
    tf_pub.publish(TFMessage(transforms=[mount('base_link', 'bumper', (3.0, 0.0, 0.0)),
                                         mount('bumper', 'radar_link', (0.5, 0.0, 0.2))]))

    node = procs([binary('radar_ingest')])
    _, pts = radar_through(probe)
    # (20, 1, 0) in radar_link → (20 + 3.0 + 0.5, 1, 0.2) in base_link (built-in: 22, 1, 0.5).
    assert np.allclose(pts[0], [23.5, 1.0, 0.2, -3.0, 5.0]), pts[0]
    assert 'extrinsics=radar=tf' in node.output(), node.output()

    lidar = procs([binary('lidar_ingest')])
    probe.wait_for(lambda: not lidar.alive(), 30, 'lidar_ingest to refuse to start')
    out = lidar.output()
    assert lidar.stop() != 0, out
    assert "lidar (lidar_link): frame 'lidar_link' does not exist in the transform tree" in out, out
    assert 'no calibration file is given' in out, out


def test_a_mount_that_moves_on_tf_is_looked_up_at_each_cloud_s_stamp(procs, ros):
    """A radar on a pan head: base_link → head latched on /tf_static, head → pan turning at
    0.5 rad/s on /tf (as robot_state_publisher sends a revolute joint, 20 Hz), pan →
    radar_link latched. radar_ingest, given no calibration file, places each cloud with the
    transform at that cloud's own stamp, interpolated between the /tf samples around it
    (tf2's lookupTransform(base_link, radar_link, stamp)); a cloud stamped past the newest
    sample is rejected and counted, never placed at a stale angle, once it has waited for
    /tf to catch up (a cloud 30 ms ahead of the newest sample is placed when it comes)."""
    import threading

    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TransformStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from tf2_msgs.msg import TFMessage

    probe = ros()
    T0, RATE, SPIN = 100_000_000_000, 0.5, 20  # first /tf stamp (ns), rad/s, Hz
    HEAD, ARM = np.array([2.0, 0.0, 0.5]), np.array([0.3, 0.0, 0.1])

    def transform(parent, child, stamp_ns, xyz, yaw):
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.header.stamp.sec, t.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, xyz)
        t.transform.rotation.z, t.transform.rotation.w = np.sin(yaw / 2), np.cos(yaw / 2)
        return t

    def yaw_at(stamp_ns):
        return RATE * (stamp_ns - T0) / 1e9

    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    probe.publisher('/tf_static', TFMessage, latched).publish(TFMessage(transforms=[
        transform('base_link', 'head', 0, HEAD, 0.0), transform('pan', 'radar_link', 0, ARM, 0.0)]))
    tf_pub = probe.publisher('/tf', TFMessage, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    newest = [None]
    stop = threading.Event()

    def joint_states():
        k = 0
        while not stop.is_set():
            stamp = T0 + k * 1_000_000_000 // SPIN
            tf_pub.publish(TFMessage(transforms=[transform('head', 'pan', stamp, (0, 0, 0), yaw_at(stamp))]))
            newest[0], k = stamp, k + 1
            time.sleep(1 / SPIN)

    spinner = threading.Thread(target=joint_states, daemon=True)
    spinner.start()
    try:
        node = procs([binary('radar_ingest'), '--ros-args', '-p', 'tf_wait:=20.0'])
        probe.subscribe('/sensors/radar', PointCloud2)
        probe.subscribe('/diagnostics', DiagnosticArray)
        pub = probe.publisher('/radar/points', PointCloud2)
        probe.wait_matched(pub, timeout=30)
        probe.wait_publishers('/sensors/radar', timeout=30)
        sent = []

        def stamped(offset_ns):
            stamp = newest[0] + offset_ns
            m = radar(0)
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            sent.append(stamp)
            return m

        # Half-way between two /tf samples, 0.2 s behind the newest: interpolated.
        probe.publish_until_through(pub, lambda _: stamped(-225_000_000), '/sensors/radar')
        # Then alternately such a cloud and one stamped 30 ms *after* the newest sample, as a
        # live sensor's cloud arrives before its instant's joint state: it waits for it.
        for k in range(4):
            base = newest[0]
            pub.publish(stamped(30_000_000 if k % 2 else -225_000_000))
            # The next cloud goes out once /tf's stamps have moved 300 ms on (not after 300 ms
            # of wall time: the joint-state thread can lag, and then a cloud 225 ms behind the
            # newest sample was stamped before the one 30 ms ahead, which the header check
            # rightly refuses as stamp_backwards).
            probe.wait_for(lambda: newest[0] >= base + 300_000_000, 5, '/tf 300 ms further on')
        def placed_stamps():
            return {o.header.stamp.sec * 1_000_000_000 + o.header.stamp.nanosec for o in probe.get('/sensors/radar')}

        # Every one of the four is placed, the two ahead of /tf included (before the node had
        # /tf samples that far back, a first cloud may have been rejected: that is fine).
        probe.wait_for(lambda: set(sent[-4:]) <= placed_stamps(), 10, 'the four clouds placed')
        for out in probe.get('/sensors/radar'):
            stamp = out.header.stamp.sec * 1_000_000_000 + out.header.stamp.nanosec
            assert stamp in sent and out.header.frame_id == 'base_link', (stamp, out.header.frame_id)
            yaw = yaw_at(stamp)
            turn = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
            expected = HEAD + turn @ (ARM + np.array([20.0, 1.0, 0.0]))
            pts = np.frombuffer(bytes(out.data), dtype='<f4').reshape(-1, 5)
            assert np.allclose(pts[:, :3], expected, atol=2e-3), (yaw, pts[0], expected)
        # The pan turned while the clouds came: each was placed at its own angle.
        placed = [o.header.stamp.sec * 1_000_000_000 + o.header.stamp.nanosec for o in probe.get('/sensors/radar')]
        assert yaw_at(max(placed)) - yaw_at(min(placed)) > 0.5, placed

        future = radar(0)
        future.header.stamp.sec, future.header.stamp.nanosec = divmod(newest[0] + 5_000_000_000, 1_000_000_000)
        pub.publish(future)
        probe.wait_for(lambda: int(diagnostics_values(probe, 'radar_ingest: radar ingest').get('rejected.mount_lookup', 0)) >= 1,
                       10, 'the cloud from the future to be rejected as mount_lookup')
        assert all(o.header.stamp.sec != future.header.stamp.sec for o in probe.get('/sensors/radar'))
        assert 'extrinsics=radar=tf_moving' in node.output(), node.output()
    finally:
        stop.set()
        spinner.join()


def test_camera_ingest_scales_the_image_and_its_camera_info_alike(procs, ros):
    """`output_width`/`output_height` scale a frame to fit (aspect kept, no padding) and
    /sensors/camera/camera_info carries K scaled with it (issue 19: intrinsics from
    CameraInfo): a bright block of a 1280×720 frame from a camera the defaults know nothing
    of lands in the 416×234 output where the published K projects the block's ray (the
    ray computed here from the raw K, independently of the node's arithmetic)."""
    from sensor_msgs.msg import CameraInfo, Image

    # Reliable input: the frame is published once, and the test is about the scaling (a
    # best-effort 2.7 MB frame was lost once after the deployment tests in one pytest run).
    procs([binary('camera_ingest'), '--ros-args', '-p', 'output_width:=416', '-p', 'output_height:=416',
           '-p', 'input_reliability:=reliable'])
    probe = ros()
    probe.subscribe('/sensors/camera', Image)
    probe.subscribe('/sensors/camera/camera_info', CameraInfo)
    probe.wait_subscribers('/camera/camera_info', timeout=30)
    probe.wait_subscribers('/camera/image_raw', timeout=30)
    info_pub = probe.publisher('/camera/camera_info', CameraInfo)
    image_pub = probe.publisher('/camera/image_raw', Image)

    w, h, k = 1280, 720, [900.0, 0.0, 650.0, 0.0, 880.0, 350.0, 0.0, 0.0, 1.0]
    info = CameraInfo(width=w, height=h, distortion_model='plumb_bob', d=[0.0] * 5, k=k,
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[900.0, 0.0, 650.0, 0.0, 0.0, 880.0, 350.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    info.header.frame_id = 'camera_optical'
    info.header.stamp.sec = 100
    # Until its CameraInfo is accepted, a 1280×720 frame disagrees with the calibration's
    # 640×480: publish it until the scaled one comes back.
    probe.wait_for(lambda: info_pub.publish(info) or probe.count('/sensors/camera/camera_info') > 0, 10,
                   'the scaled camera_info')
    out_info = probe.get('/sensors/camera/camera_info')[-1]
    assert (out_info.width, out_info.height) == (416, 234), (out_info.width, out_info.height)
    assert out_info.header.frame_id == 'camera_optical'

    u0, v0 = 900, 200  # the block's top-left pixel
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[v0:v0 + 8, u0:u0 + 8] = 255
    img = Image(width=w, height=h, encoding='rgb8', step=w * 3, data=rgb.tobytes())
    img.header = info.header
    image_pub.publish(img)
    probe.wait_for(lambda: probe.count('/sensors/camera') > 0, 10, 'the scaled frame')
    out = probe.get('/sensors/camera')[-1]
    assert (out.width, out.height, out.encoding) == (416, 234, 'rgb8')
    # The block's ray (its centre in the raw image) projected with the published K …
    x, y = (u0 + 3.5 - k[2]) / k[0], (v0 + 3.5 - k[5]) / k[4]
    ko = list(out_info.k)
    expected = (ko[0] * x + ko[2], ko[4] * y + ko[5])
    # … against where the block is in the published frame (brightness-weighted centre).
    got = np.frombuffer(bytes(out.data), np.uint8).reshape(234, 416, 3)[:, :, 0].astype(float)
    vs, us = np.mgrid[0:234, 0:416]
    centre = ((got * us).sum() / got.sum(), (got * vs).sum() / got.sum())
    assert np.hypot(centre[0] - expected[0], centre[1] - expected[1]) < 0.3, (centre, expected, ko)
    # P follows K (its rows scale the same way).
    assert np.allclose([out_info.p[0], out_info.p[2], out_info.p[5], out_info.p[6]], [ko[0], ko[2], ko[4], ko[5]])


def scene_rgb(w: int, h: int, seed: int) -> np.ndarray:
    """A camera-like frame not drawn by our simulator: a lit gradient, textured blocks of
    several colours and sensor noise."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:h, 0:w]
    img = np.stack([60 + 100 * u / w, 80 + 60 * v / h, 140 - 80 * v / h], axis=-1)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 80), rng.integers(0, h - 60)
        img[y0:y0 + rng.integers(20, 60), x0:x0 + rng.integers(20, 80)] = rng.integers(0, 255, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_camera_ingest_decodes_what_image_transports_compressed_plugin_sends(procs, ros):
    """`image_transport: compressed` (issue 21: JPEG/PNG from a sensor box): camera_ingest
    reads sensor_msgs/CompressedImage from a remapped `…/compressed` topic, files Pillow wrote
    (JPEG with 4:2:0 chroma as cameras send it, RGB and grey PNG), and publishes the rgb8 frame
    an independent decoder (Pillow's libjpeg) sees, PNG exactly. Corrupt, truncated, foreign
    and wrong-size files are refused by name and counted; nothing reaches /sensors/camera
    from them, and the stream goes on after them."""
    import io

    from PIL import Image as PilImage
    from sensor_msgs.msg import CompressedImage, Image

    # Reliable input: this test is about decoding, and a best-effort 0.9 MB PNG was once lost
    # on the way (after the deployment tests, in the same pytest process).
    procs([binary('camera_ingest'), '--ros-args', '-p', 'image_transport:=compressed',
           '-p', 'input_reliability:=reliable', '-r', '/camera/image_raw/compressed:=/front/image_raw/compressed'])
    probe = ros()
    probe.subscribe('/sensors/camera', Image)
    from diagnostic_msgs.msg import DiagnosticArray
    probe.subscribe('/diagnostics', DiagnosticArray)
    probe.wait_subscribers('/front/image_raw/compressed', timeout=30)
    # It reads the compressed topic instead of the raw one, not beside it.
    assert probe.node.count_subscribers('/camera/image_raw') == 0
    pub = probe.publisher('/front/image_raw/compressed', CompressedImage)

    def encoded(rgb: np.ndarray, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        PilImage.fromarray(rgb).save(buf, fmt, **kw)
        return buf.getvalue()

    def message(data: bytes, fmt: str, sec: int) -> CompressedImage:
        m = CompressedImage(format=fmt, data=data)
        m.header.frame_id = 'camera_optical'
        m.header.stamp.sec = sec
        return m

    scene = scene_rgb(640, 480, seed=5)
    jpeg = encoded(scene, 'JPEG', quality=90)  # Pillow's default 4:2:0 subsampling
    grey = scene.mean(axis=2).astype(np.uint8)
    frames = [  # (what, data, format, what /sensors/camera must show or None)
        ('jpeg', jpeg, 'bgr8; jpeg compressed bgr8', np.asarray(PilImage.open(io.BytesIO(jpeg)).convert('RGB'))),
        ('png', encoded(scene, 'PNG'), 'rgb8; png compressed rgb8', scene),
        ('grey png', encoded(grey, 'PNG'), 'png', np.repeat(grey[:, :, None], 3, axis=2)),
        ('truncated jpeg', jpeg[:len(jpeg) * 7 // 10], 'jpeg', None),
        ('not an image', b'GIF89a' + bytes(100), 'gif', None),
        ('wrong size', encoded(scene[:240, :320], 'JPEG', quality=90), 'jpeg', None),
        ('jpeg again', jpeg, 'jpeg', np.asarray(PilImage.open(io.BytesIO(jpeg)).convert('RGB'))),
    ]
    warm_up = probe.publish_until_through(pub, lambda s: message(jpeg, 'jpeg', s), '/sensors/camera', stamp=100)
    sec = warm_up
    for what, data, fmt, _ in frames:
        sec += 1
        pub.publish(message(data, fmt, sec))
        time.sleep(0.15)
    want = [(what, expected) for what, _, _, expected in frames if expected is not None]

    def ours():  # by stamp: a late warm-up frame is not one of them
        return [o for o in probe.get('/sensors/camera') if o.header.stamp.sec > warm_up]
    probe.wait_for(lambda: len(ours()) >= len(want), 15,
                   f"the decoded frames after stamp {warm_up}; got stamps {[o.header.stamp.sec for o in probe.get('/sensors/camera')]}; "
                   f"{diagnostics_values(probe, 'camera_ingest: camera ingest')}")
    time.sleep(0.5)
    outputs = ours()
    assert len(outputs) == len(want), [o.header.stamp.sec for o in outputs]
    for (what, expected), out in zip(want, outputs):
        assert (out.width, out.height, out.encoding, out.step) == (640, 480, 'rgb8', 1920), what
        got = np.frombuffer(bytes(out.data), np.uint8).reshape(480, 640, 3).astype(int)
        diff = np.abs(got - expected.astype(int))
        if 'jpeg' in what:
            # Two JPEG decoders may round the IDCT and chroma upsampling differently, never
            # more than a few levels; and the file is within JPEG's loss of the scene.
            assert diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 8, (what, diff.mean(), diff.max())
            assert np.abs(got - scene.astype(int)).mean() < 6, what
        else:
            assert diff.max() == 0, what

    def counted():
        d = diagnostics_values(probe, 'camera_ingest: camera ingest')
        return (d.get('rejected.undecodable'), d.get('rejected.unsupported_compression'),
                d.get('rejected.size_mismatch_intrinsics')) == ('1', '1', '1') and int(d.get('compressed.bytes', 0)) > 0
    probe.wait_for(counted, 10, 'the three refused files counted by reason')

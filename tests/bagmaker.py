"""Writes raw-sensor rosbag2 bags with the independent `rosbags` package.

The streams are what real drivers publish on DESIGN.md §3's raw topics, at nominal rates:
camera 640x480 rgb8 30 Hz (+ CameraInfo), LiDAR ~30k points 10 Hz (x,y,z,intensity,t),
radar 20 Hz (x,y,z,doppler,rcs), IMU 200 Hz. Content is simple geometry, deterministic in
the seed: enough for the ingest nodes to validate and transform, nothing more (scenario
realism is fusion_sim's job).

    python tests/bagmaker.py OUT_DIR [--duration S] [--storage mcap|sqlite3]
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.ROS2_JAZZY)
T = TS.types

RATES = {'/camera/image_raw': 30, '/camera/camera_info': 30, '/lidar/points': 10, '/radar/points': 20, '/imu/data': 200}
TYPES = {
    '/camera/image_raw': 'sensor_msgs/msg/Image',
    '/camera/camera_info': 'sensor_msgs/msg/CameraInfo',
    '/lidar/points': 'sensor_msgs/msg/PointCloud2',
    '/radar/points': 'sensor_msgs/msg/PointCloud2',
    '/imu/data': 'sensor_msgs/msg/Imu',
}
FRAMES = {'/camera/image_raw': 'camera_optical', '/camera/camera_info': 'camera_optical',
          '/lidar/points': 'lidar_link', '/radar/points': 'radar_link', '/imu/data': 'imu_link'}
START_NS = 1_700_000_000 * 10**9
FLOAT32 = 7


def header(stamp_ns: int, frame: str):
    return T['std_msgs/msg/Header'](
        stamp=T['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame)


def fields(names):
    return [T['sensor_msgs/msg/PointField'](name=n, offset=4 * i, datatype=FLOAT32, count=1) for i, n in enumerate(names)]


def cloud(stamp_ns: int, frame: str, names, values: np.ndarray):
    values = np.ascontiguousarray(values, dtype='<f4')
    n = values.shape[0]
    step = 4 * len(names)
    return T['sensor_msgs/msg/PointCloud2'](
        header=header(stamp_ns, frame), height=1, width=n, fields=fields(names), is_bigendian=False,
        point_step=step, row_step=step * n, data=values.view(np.uint8).reshape(-1), is_dense=True)


def image(stamp_ns: int, i: int, width=640, height=480, encoding='rgb8', rng=None):
    x = np.arange(width, dtype=np.uint16)
    row = ((x + 4 * i) % 256).astype(np.uint8)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:, :, 0] = row
    img[:, :, 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    img[:, :, 2] = 128
    return T['sensor_msgs/msg/Image'](
        header=header(stamp_ns, 'camera_optical'), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * 3, data=img.reshape(-1))


def camera_info(stamp_ns: int, width=640, height=480):
    k = np.array([500.0, 0, 320.0, 0, 500.0, 240.0, 0, 0, 1.0])
    p = np.array([500.0, 0, 320.0, 0, 0, 500.0, 240.0, 0, 0, 0, 1.0, 0])
    return T['sensor_msgs/msg/CameraInfo'](
        header=header(stamp_ns, 'camera_optical'), height=height, width=width, distortion_model='plumb_bob',
        d=np.zeros(5), k=k, r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0,
        roi=T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def lidar(stamp_ns: int, rng, beams=32, azimuths=940):
    """A 32-beam sweep of a flat ground and a ring of walls: ~30k points."""
    az = np.linspace(-math.pi, math.pi, azimuths, endpoint=False)
    el = np.radians(np.linspace(-25.0, 15.0, beams))
    a, e = np.meshgrid(az, el)
    # Ground at z = -1.8 (sensor 1.8 m up) for downward beams, a wall at 30 m otherwise.
    r = np.where(e < -0.01, np.minimum(1.8 / np.maximum(-np.sin(e), 1e-3), 30.0), 30.0 / np.maximum(np.cos(e), 0.2))
    r = r + rng.normal(0.0, 0.02, r.shape)
    x, y, z = r * np.cos(e) * np.cos(a), r * np.cos(e) * np.sin(a), r * np.sin(e)
    t = ((a + math.pi) / (2 * math.pi) * 0.1).astype(np.float32)
    v = np.stack([x, y, z, rng.uniform(0, 100, r.shape), t], axis=-1).reshape(-1, 5)
    return cloud(stamp_ns, 'lidar_link', ['x', 'y', 'z', 'intensity', 't'], v)


def radar(stamp_ns: int, rng, n=64):
    r = rng.uniform(5, 80, n)
    az = rng.uniform(-0.6, 0.6, n)
    v = np.stack([r * np.cos(az), r * np.sin(az), rng.normal(0, 0.3, n), rng.normal(-5, 3, n), rng.uniform(-10, 30, n)], axis=-1)
    return cloud(stamp_ns, 'radar_link', ['x', 'y', 'z', 'doppler', 'rcs'], v)


def imu(stamp_ns: int, rng):
    cov = np.zeros(9)
    ocov = np.zeros(9)
    ocov[0] = -1.0  # no orientation (REP 145)
    V3 = T['geometry_msgs/msg/Vector3']
    return T['sensor_msgs/msg/Imu'](
        header=header(stamp_ns, 'imu_link'),
        orientation=T['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0), orientation_covariance=ocov,
        angular_velocity=V3(x=float(rng.normal(0, 0.01)), y=float(rng.normal(0, 0.01)), z=0.1 + float(rng.normal(0, 0.01))),
        angular_velocity_covariance=cov,
        linear_acceleration=V3(x=float(rng.normal(0, 0.05)), y=float(rng.normal(0, 0.05)), z=9.81 + float(rng.normal(0, 0.05))),
        linear_acceleration_covariance=cov)


def schedule(duration: float, topics=None):
    """(stamp_ns, topic, index) in time order for every stream."""
    topics = topics or list(RATES)
    events = []
    for topic in topics:
        hz = RATES[topic]
        for i in range(int(round(duration * hz))):
            events.append((START_NS + int(i * 1e9 / hz) + 1_000, topic, i))
    events.sort()
    return events


def make(topic: str, stamp: int, i: int, rng):
    if topic == '/camera/image_raw':
        return image(stamp, i)
    if topic == '/camera/camera_info':
        return camera_info(stamp)
    if topic == '/lidar/points':
        return lidar(stamp, rng)
    if topic == '/radar/points':
        return radar(stamp, rng)
    return imu(stamp, rng)


def write_bag(out: Path, duration: float = 3.0, storage: str = 'mcap', seed: int = 7, topics=None) -> dict[str, int]:
    """Writes the bag; returns the message count per topic."""
    rng = np.random.default_rng(seed)
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    counts: dict[str, int] = {}
    lidar_cache = {}
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        conns = {t: writer.add_connection(t, TYPES[t], typestore=TS) for t in (topics or RATES)}
        for stamp, topic, i in schedule(duration, topics):
            if topic == '/lidar/points':
                # Serializing 30k-point sweeps dominates; reuse a few sweeps with new stamps.
                key = i % 3
                if key not in lidar_cache:
                    lidar_cache[key] = make(topic, stamp, i, rng)
                msg = lidar_cache[key]
                msg.header.stamp = T['builtin_interfaces/msg/Time'](sec=stamp // 10**9, nanosec=stamp % 10**9)
            else:
                msg = make(topic, stamp, i, rng)
            writer.write(conns[topic], stamp, TS.serialize_cdr(msg, TYPES[topic]))
            counts[topic] = counts.get(topic, 0) + 1
    return counts


def compress_camera(src: Path, dst: Path, quality: int = 90) -> dict[str, int]:
    """A copy of bag `src` whose rgb8/bgr8 images are JPEG (Pillow, 4:2:0, `quality`) on
    `<topic>/compressed`, as a camera driver's image_transport compressed plugin records them
    (format "rgb8; jpeg compressed bgr8"); every other message is copied byte for byte.
    Returns the message count per topic written."""
    import io

    from PIL import Image as PilImage
    from rosbags.rosbag2 import Reader

    counts: dict[str, int] = {}
    with Reader(src) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for c in reader.connections:
            if c.msgtype == 'sensor_msgs/msg/Image':
                conns[c.id] = writer.add_connection(f'{c.topic}/compressed', 'sensor_msgs/msg/CompressedImage', typestore=TS)
            else:
                conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=TS)
        for c, stamp, data in reader.messages():
            out = conns[c.id]
            if c.msgtype == 'sensor_msgs/msg/Image':
                img = TS.deserialize_cdr(data, c.msgtype)
                assert img.encoding in ('rgb8', 'bgr8'), img.encoding
                rows = np.frombuffer(img.data, np.uint8).reshape(img.height, img.step)[:, :img.width * 3]
                rgb = rows.reshape(img.height, img.width, 3)
                if img.encoding == 'bgr8':
                    rgb = rgb[:, :, ::-1]
                buf = io.BytesIO()
                PilImage.fromarray(np.ascontiguousarray(rgb)).save(buf, 'JPEG', quality=quality)
                msg = T['sensor_msgs/msg/CompressedImage'](
                    header=img.header, format=f'{img.encoding}; jpeg compressed bgr8',
                    data=np.frombuffer(buf.getvalue(), np.uint8))
                data = TS.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage')
            writer.write(out, stamp, data)
            counts[out.topic] = counts.get(out.topic, 0) + 1
    return counts


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('out', type=Path)
    ap.add_argument('--duration', type=float, default=3.0)
    ap.add_argument('--storage', choices=['mcap', 'sqlite3'], default='mcap')
    ap.add_argument('--seed', type=int, default=7)
    a = ap.parse_args()
    c = write_bag(a.out, a.duration, a.storage, a.seed)
    print(f'wrote {a.out}: ' + ', '.join(f'{k}={v}' for k, v in c.items()))

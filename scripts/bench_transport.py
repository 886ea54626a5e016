#!/usr/bin/env python3
"""DDS transport costs of the node set's topic classes (issue 21 item 4), as one JSON document.

For each class (a 640x480 rgb8 image at 30 Hz, the same frame as a JPEG CompressedImage, a
19,000-point cloud at 10 Hz, IMU at 200 Hz, anomaly events at 10 Hz) a `fusion_bench_transport`
publisher and subscriber (r2r, the QoS the node set uses for that class) run
  - on one host (Fast DDS shared memory),
  - across hosts (UDP over a veth LAN of network namespaces: tests/netlan.py),
  - across hosts on a 100 Mbit/s link (an htb rate limit on the sender's veth),
and report stamp-to-receipt latency, CPU per message on each side, and bytes on the link.

The frame is not one of ours: fusion_sim's flat-shaded renders compress far better than a
camera's pictures, so the image is 1/f ("pink") noise, whose spectrum is that of natural
images, made with a fixed seed; JPEG quality 90 (Pillow, libjpeg-turbo). The subscriber of
the JPEG class decodes every frame (zune-jpeg), as a camera_ingest taking compressed input would.
Discovery is the multi-host profile (LOCALHOST + static peers, config/fastdds_localhost.xml, as
scripts/ros-env.sh sets it) with the package's kernel settings.

Run as root (network namespaces) from the repository root after `make install`:
    source scripts/ros-env.sh && source install/local_setup.bash && python scripts/bench_transport.py
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tests'))
import netlan  # noqa: E402

BENCH = str(ROOT / 'target' / 'release' / 'fusion_bench_transport')
CACHE = ROOT / '.cache' / 'bench'
# class: (rate Hz, messages)
CLASSES = {'image': (30, 150), 'image-jpeg': (30, 150), 'cloud': (10, 50), 'imu': (200, 1000), 'event': (10, 50)}


def pink_noise_frame(seed: int = 7) -> np.ndarray:
    """640x480x3 uint8 with a 1/f amplitude spectrum per channel."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(480)[:, None]
    fx = np.fft.rfftfreq(640)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    channels = []
    for _ in range(3):
        spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f
        spectrum[0, 0] = 0
        c = np.fft.irfft2(spectrum, s=(480, 640))
        channels.append((c - c.mean()) / (c.std() * 4) * 255 + 128)
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def frames() -> dict[str, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    rgb = pink_noise_frame()
    raw, jpeg = CACHE / 'pink_640x480.rgb', CACHE / 'pink_640x480_q90.jpg'
    raw.write_bytes(rgb.tobytes())
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, 'JPEG', quality=90)
    jpeg.write_bytes(buf.getvalue())
    return {'image': raw, 'image-jpeg': jpeg}


def jpeg_encode_ms(path: Path, repeat: int = 50) -> float:
    """What the sender pays to compress one frame (Pillow, libjpeg-turbo)."""
    img = Image.frombytes('RGB', (640, 480), path.read_bytes())
    start = time.perf_counter()
    for _ in range(repeat):
        img.save(io.BytesIO(), 'JPEG', quality=90)
    return (time.perf_counter() - start) / repeat * 1000


def run_pair(cls: str, sender: str, receiver: str, frame: Path | None, best_effort: bool = False) -> dict:
    rate, count = CLASSES[cls]
    common = ['--class', cls, '--rate', str(rate), '--count', str(count)] + (['--frame', str(frame)] if frame else [])
    common += ['--best-effort'] if best_effort else []
    sub = subprocess.Popen(netlan.on_host(receiver, BENCH, '--side', 'sub', *common, '--timeout', str(count / rate + 20)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=netlan.profile_env(receiver))
    before = netlan.link_bytes(sender)['tx']
    pub = subprocess.run(netlan.on_host(sender, BENCH, '--side', 'pub', *common), capture_output=True, text=True,
                         env=netlan.profile_env(sender), timeout=count / rate + 60)
    out, err = sub.communicate(timeout=count / rate + 60)
    if pub.returncode != 0 or sub.returncode != 0:
        raise SystemExit(f'bench_transport: {cls} {sender}->{receiver} failed:\n{pub.stderr}\n{err}')
    p, s = json.loads(pub.stdout), json.loads(out)
    link_mb_per_msg = (netlan.link_bytes(sender)['tx'] - before) / count / 1e6
    return {'received': s['received'], 'sent': p['sent'], 'payload_kb': round(s['payload_bytes'] / 1000, 1),
            'latency_ms': {k: round(v, 3) for k, v in s['latency_ms'].items()},
            'cpu_ms_per_msg': {'pub': round(p['cpu_ms_per_msg'], 3), 'sub': round(s['cpu_ms_per_msg'], 3)},
            'decode_failures': s['decode_failures'],
            **({'link_mb_per_msg': round(link_mb_per_msg, 3)} if sender != receiver else {})}


def main():
    try:
        netlan.make_lan()
    except netlan.NoNamespaces as e:
        raise SystemExit(f'bench_transport: needs root for network namespaces: {e}')
    # The package's kernel settings (config/sysctl-sensor_fusion.conf), as a multi-host
    # deployment installs them; the socket-buffer ones are not per namespace: put back after.
    replaced = netlan.set_sysctl([(k, v) for k, v in netlan.shipped_sysctl() if k.startswith('net.core.')])
    for host in netlan.HOSTS:
        netlan.set_sysctl([(k, v) for k, v in netlan.shipped_sysctl() if k.startswith('net.ipv4.')], host)
    try:
        paths = frames()
        result = {'frame': {'kind': '1/f noise 640x480 rgb8 (natural-image spectrum), seed 7',
                            'raw_kb': round(paths['image'].stat().st_size / 1000, 1),
                            'jpeg_q90_kb': round(paths['image-jpeg'].stat().st_size / 1000, 1),
                            'jpeg_encode_ms': round(jpeg_encode_ms(paths['image']), 2)}}
        for placement, (sender, receiver, mbit) in {'same_host_shm': ('compute', 'compute', None),
                                                     'across_hosts_udp': ('sensors', 'compute', None),
                                                     'across_hosts_100mbit': ('sensors', 'compute', 100)}.items():
            netlan.limit_rate(sender, mbit)
            classes = CLASSES if mbit is None else ['image', 'image-jpeg']
            result[placement] = {cls: run_pair(cls, sender, receiver, paths.get(cls)) for cls in classes}
            netlan.limit_rate(sender, None)
        print(json.dumps(result))
    finally:
        netlan.set_sysctl(replaced)
        netlan.remove_lan()


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""An independent street-scene renderer for evaluating the camera detector off our own
simulator: a COCO-format dataset (PNG frames + annotations.json) that nothing in training
has seen.

It shares no code, palette, texture or shape with `sensor_sim` (Rust, ray-cast boxes): this
is a numpy painter's-algorithm rasterizer of projected polygons and discs, with its own
bodies (billboard pedestrians with round heads and a stride, extruded car/van side profiles
with sloped windscreens, round wheels and window panes; traffic cones, striped barrels and
A-frame barriers), its own palette (HLS draws, two-tone and gradient paint, dirt), its own
sky (gradients with value-noise clouds and a city skyline) and ground (asphalt noise, lane
dashes, kerbs and paved sidewalks). The camera is the one in DESIGN.md §3 (640x480, f = 500
px, 1.2 m above the ground, looking ahead), with a small random pitch and roll.

Labels: the visible part of every object from an id buffer (occlusion included); an object
with fewer than 50 visible pixels or under 10 px tall is `iscrowd: 1` (COCO's ignore region,
our "difficult"), as in `models::data`.

    python scripts/cross_renderer.py --out DIR --frames 300 --seed 1
"""
from __future__ import annotations

import argparse
import colorsys
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np

W, H = 640, 480
FX = FY = 500.0
CX, CY = 320.0, 240.0
CAM_HEIGHT = 1.2
CATEGORIES = [{'id': 1, 'name': 'person'}, {'id': 2, 'name': 'vehicle'}, {'id': 3, 'name': 'obstacle'}]


def write_png(path: Path, rgb: np.ndarray) -> None:
    h, w, _ = rgb.shape
    raw = b''.join(b'\x00' + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
    png += chunk(b'IDAT', zlib.compress(raw, 6)) + chunk(b'IEND', b'')
    path.write_bytes(png)


def value_noise(rng: np.random.Generator, shape, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1): a random grid bilinearly upsampled."""
    h, w = shape
    grid = rng.random((cells + 2, cells + 2))
    ys = np.linspace(0, cells, h, endpoint=False)
    xs = np.linspace(0, cells, w, endpoint=False)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return a * (1 - fx) * (1 - fy) + b * fx * (1 - fy) + c * (1 - fx) * fy + d * fx * fy


class Camera:
    def __init__(self, rng: np.random.Generator):
        pitch = math.radians(rng.uniform(-2.0, 2.0))
        roll = math.radians(rng.uniform(-1.5, 1.5))
        # World (x fwd, y left, z up) -> optical (x right, y down, z fwd), then pitch/roll.
        base = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
        cp, sp, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        self.r = rz @ rx @ base
        self.t = np.array([0.0, 0.0, CAM_HEIGHT])

    def to_cam(self, p: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(p) - self.t) @ self.r.T

    def project(self, p: np.ndarray):
        c = self.to_cam(p)
        z = c[:, 2]
        return np.stack([FX * c[:, 0] / z + CX, FY * c[:, 1] / z + CY], axis=1), z

    def rays(self) -> np.ndarray:
        """World directions of every pixel centre, H x W x 3."""
        u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
        d = np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)], axis=-1)
        return d @ self.r  # inverse rotation (orthonormal)


class Canvas:
    def __init__(self):
        self.rgb = np.zeros((H, W, 3), np.float64)
        self.ids = np.zeros((H, W), np.int32)  # 0 = background, k = object k

    def fill_polygon(self, pts: np.ndarray, color, oid: int, shade=None) -> None:
        """Fills a convex polygon (2D points, any winding)."""
        if len(pts) < 3 or not np.all(np.isfinite(pts)):
            return
        x0, y0 = max(int(math.floor(pts[:, 0].min())), 0), max(int(math.floor(pts[:, 1].min())), 0)
        x1, y1 = min(int(math.ceil(pts[:, 0].max())), W - 1), min(int(math.ceil(pts[:, 1].max())), H - 1)
        if x1 < x0 or y1 < y0:
            return
        u, v = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        inside_pos = np.ones(u.shape, bool)
        inside_neg = np.ones(u.shape, bool)
        n = len(pts)
        for i in range(n):
            ax, ay = pts[i]
            bx, by = pts[(i + 1) % n]
            cross = (bx - ax) * (v - ay) - (by - ay) * (u - ax)
            inside_pos &= cross >= 0
            inside_neg &= cross <= 0
        mask = inside_pos | inside_neg
        self._paint(mask, y0, x0, color, oid, shade, u, v)

    def fill_ellipse(self, center, rx: float, ry: float, color, oid: int) -> None:
        cx, cy = center
        if not (np.isfinite(cx) and np.isfinite(cy)) or rx < 0.3 or ry < 0.3:
            return
        x0, y0 = max(int(cx - rx), 0), max(int(cy - ry), 0)
        x1, y1 = min(int(cx + rx) + 1, W - 1), min(int(cy + ry) + 1, H - 1)
        if x1 < x0 or y1 < y0:
            return
        u, v = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        mask = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1.0
        self._paint(mask, y0, x0, color, oid, None, u, v)

    def _paint(self, mask, y0, x0, color, oid, shade, u, v) -> None:
        h, w = mask.shape
        region = self.rgb[y0:y0 + h, x0:x0 + w]
        col = np.asarray(color, np.float64)
        if shade is not None:
            col = shade(u, v)[..., None] * col
        region[mask] = col if col.ndim == 1 else col[mask]
        self.ids[y0:y0 + h, x0:x0 + w][mask] = oid


def random_color(rng, dark_ok=True):
    h = rng.random()
    l = rng.uniform(0.08 if dark_ok else 0.3, 0.9)
    s = rng.uniform(0.0, 1.0) ** 0.7
    return np.array(colorsys.hls_to_rgb(h, l, s)) * 255


def draw_background(cv: Canvas, cam: Camera, rng: np.random.Generator) -> None:
    d = cam.rays()
    up = d[..., 2] / np.linalg.norm(d, axis=-1)
    # Sky: a gradient between two drawn colours, value-noise clouds, a skyline band.
    horizon = np.array(colorsys.hls_to_rgb(rng.uniform(0.5, 0.7), rng.uniform(0.55, 0.9), rng.uniform(0.0, 0.6))) * 255
    zenith = np.array(colorsys.hls_to_rgb(rng.uniform(0.55, 0.75), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.9))) * 255
    if rng.random() < 0.2:  # sunset
        horizon = np.array([240, rng.uniform(120, 190), rng.uniform(60, 120)])
    f = np.clip(up * 3.0, 0, 1)[..., None]
    sky = horizon * (1 - f) + zenith * f
    clouds = value_noise(rng, (H, W), 6) * 0.6 + value_noise(rng, (H, W), 20) * 0.4
    cover = rng.uniform(0.0, 0.8)
    c = np.clip((clouds - (1 - cover)) * 3, 0, 1)[..., None]
    sky = sky * (1 - c) + np.array([235, 235, 240]) * rng.uniform(0.7, 1.0) * c
    cv.rgb[:] = sky
    # Skyline: buildings as columns whose height above the horizon varies.
    ground_hit = d[..., 2] < -1e-6
    t = np.where(ground_hit, -CAM_HEIGHT / np.where(ground_hit, d[..., 2], -1), np.inf)
    horizon_row = np.argmax(ground_hit, axis=0)
    if rng.random() < 0.8:
        x = 0
        while x < W:
            bw = int(rng.integers(15, 80))
            bh = int(rng.integers(5, 60))
            col = random_color(rng) * rng.uniform(0.4, 0.8)
            for xx in range(x, min(x + bw, W)):
                top = max(horizon_row[xx] - bh, 0)
                cv.rgb[top:horizon_row[xx], xx] = col
            x += bw
    # Ground: asphalt with noise, lane dashes, kerbs and a paved sidewalk (sky pixels get
    # coordinates far away; they are not painted).
    t = np.where(np.isfinite(t), t, 1e6)
    gx = cam.t[0] + d[..., 0] * t
    gy = cam.t[1] + d[..., 1] * t
    asphalt = rng.uniform(45, 110)
    tint = np.array([1.0, rng.uniform(0.95, 1.05), rng.uniform(0.9, 1.1)])
    fine = value_noise(rng, (H, W), 80)
    ground = asphalt * tint * (0.85 + 0.3 * fine[..., None])
    road_half = rng.uniform(5.0, 8.0)
    side = np.abs(gy) > road_half
    tiles = ((np.floor(gx / 0.6) + np.floor(gy / 0.6)) % 2 == 0)
    paving = rng.uniform(120, 190) * np.array([1.0, 0.97, 0.92])
    ground = np.where(side[..., None], paving * (0.9 + 0.1 * tiles[..., None]), ground)
    kerb = np.abs(np.abs(gy) - road_half) < 0.15
    ground = np.where(kerb[..., None], np.array([200, 200, 195]), ground)
    for lane in (-road_half / 2, road_half / 2) if rng.random() < 0.5 else (0.0,):
        dash = (np.abs(gy - lane) < 0.08) & ((gx % 9.0) < 3.0)
        ground = np.where(dash[..., None], np.array([235, 235, 225]), ground)
    far = np.clip(t / 200.0, 0, 1)[..., None]
    ground = ground * (1 - far) + horizon * far
    cv.rgb[ground_hit] = ground[ground_hit]


def box_faces(center, l, w, h, yaw, z0=0.0):
    """The 6 faces (4 world points each) of an oriented box standing at z0."""
    c, s = math.cos(yaw), math.sin(yaw)
    corners = []
    for dz in (z0, z0 + h):
        for dx, dy in ((-l / 2, -w / 2), (l / 2, -w / 2), (l / 2, w / 2), (-l / 2, w / 2)):
            corners.append([center[0] + c * dx - s * dy, center[1] + s * dx + c * dy, dz])
    p = np.array(corners)
    idx = [(0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
    return [p[list(i)] for i in idx]


def draw_faces(cv, cam, faces, colors, oid, light):
    """Faces far to near, each lit by its normal against the light direction."""
    order = []
    for f, col in zip(faces, colors):
        _, z = cam.project(f)
        if np.any(z < 0.3):
            continue
        n = np.cross(f[1] - f[0], f[2] - f[0])
        norm = np.linalg.norm(n)
        lit = 0.55 + 0.45 * abs(float(n @ light)) / norm if norm > 0 else 0.8
        order.append((float(z.mean()), f, col, lit))
    for _, f, col, lit in sorted(order, key=lambda e: -e[0]):
        uv, _ = cam.project(f)
        cv.fill_polygon(uv, np.clip(np.asarray(col) * lit, 0, 255), oid)


def billboard(center, yaw_to_cam, width, z0, z1, lean=0.0):
    """A vertical quad facing the camera, `width` wide, from height z0 to z1."""
    dx, dy = -math.sin(yaw_to_cam) * width / 2, math.cos(yaw_to_cam) * width / 2
    x, y = center
    return np.array([[x - dx, y - dy, z0], [x + dx, y + dy, z0],
                     [x + dx + lean, y + dy, z1], [x - dx + lean, y - dy, z1]])


def draw_person(cv, cam, obj, oid, rng):
    x, y, h = obj['x'], obj['y'], obj['h']
    face = math.atan2(y, x)
    shirt, trousers = random_color(rng), random_color(rng)
    skin = np.array(colorsys.hls_to_rgb(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.8), rng.uniform(0.2, 0.6))) * 255
    stride = rng.uniform(-0.25, 0.25)
    lateral = np.array([-math.sin(face), math.cos(face)])
    for k, sgn in enumerate((-1, 1)):
        foot = np.array([x, y]) + lateral * 0.09 * sgn + np.array([math.cos(face + 1.57), 0]) * 0.0
        leg = billboard(foot, face, 0.14, 0.0, 0.48 * h, lean=stride * sgn * 0.0)
        leg[:2, 1] += lateral[1] * stride * sgn * 0.3
        cv.fill_polygon(cam.project(leg)[0], trousers * (0.8 + 0.1 * k), oid)
    torso = billboard((x, y), face, 0.42, 0.47 * h, 0.82 * h)
    torso[3:, :2] = torso[3:, :2]  # shoulders as wide as the waist
    cv.fill_polygon(cam.project(torso)[0], shirt, oid)
    for sgn in (-1, 1):
        shoulder = np.array([x, y]) + lateral * 0.26 * sgn
        arm = billboard(shoulder, face, 0.1, 0.45 * h, 0.8 * h)
        cv.fill_polygon(cam.project(arm)[0], shirt * 0.85, oid)
    head_c, z = cam.project(np.array([x, y, 0.91 * h]))
    if z[0] > 0.3:
        r = FX * 0.11 / z[0]
        cv.fill_ellipse(head_c[0], r, r * 1.15, skin, oid)
        if rng.random() < 0.5:  # hair or a cap
            cv.fill_ellipse((head_c[0][0], head_c[0][1] - 0.5 * r), r, 0.6 * r, random_color(rng) * 0.5, oid)


def draw_vehicle(cv, cam, obj, oid, rng, light):
    x, y, yaw, l, w, h = obj['x'], obj['y'], obj['yaw'], obj['l'], obj['w'], obj['h']
    paint = random_color(rng)
    wheel_r = 0.32
    c, s = math.cos(yaw), math.sin(yaw)

    def world(px, py, pz):
        return [x + c * px - s * py, y + s * px + c * py, pz]

    # Side profile (x along the body, z up), convex: bumper, hood, windscreen, roof, rear.
    van = obj['kind'] == 'van'
    profile = [(-l / 2, 0.3), (l / 2, 0.3), (l / 2, 0.55 * h), (l * (0.3 if not van else 0.42), 0.62 * h),
               (l * (0.12 if not van else 0.32), h), (-l * (0.28 if not van else 0.48), h), (-l / 2, 0.6 * h)]
    sides = [np.array([world(px, sgn * w / 2, pz) for px, pz in profile]) for sgn in (-1, 1)]
    faces, colors = [], []
    for sd in sides:
        faces.append(sd)
        colors.append(paint)
    n = len(profile)
    for i in range(n):
        a, b = profile[i], profile[(i + 1) % n]
        quad = np.array([world(a[0], -w / 2, a[1]), world(b[0], -w / 2, b[1]),
                         world(b[0], w / 2, b[1]), world(a[0], w / 2, a[1])])
        glass = i in (3, 5)  # windscreen and rear window
        faces.append(quad)
        colors.append(np.array([40, 50, 60]) if glass else paint * 0.9)
    draw_faces(cv, cam, faces, colors, oid, light)
    # Side windows on the visible side, wheels on both sides as discs.
    cam_side = 1 if (np.array([-s, c]) @ (np.array([0.0, 0.0]) - np.array([x, y]))) > 0 else -1
    top0, top1 = 0.62 * h + 0.05, h - 0.06
    xs = (l * (0.28 if not van else 0.4), -l * (0.26 if not van else 0.46))
    win = np.array([world(xs[0], cam_side * (w / 2 + 0.01), top0), world(xs[1], cam_side * (w / 2 + 0.01), top0),
                    world(xs[1] + 0.1, cam_side * (w / 2 + 0.01), top1), world(xs[0] - 0.3, cam_side * (w / 2 + 0.01), top1)])
    uv, z = cam.project(win)
    if np.all(z > 0.3):
        cv.fill_polygon(uv, np.array([55, 65, 80]) * rng.uniform(0.6, 1.3), oid)
    for ax in (l / 2 - 0.8, -l / 2 + 0.8):
        centre = np.array(world(ax, cam_side * (w / 2 + 0.02), wheel_r))
        uv, z = cam.project(centre)
        if z[0] > 0.3:
            to_cam = cam.t[:2] - centre[:2]
            axle = np.array([-s, c])
            fore = abs(float(axle @ to_cam) / (np.linalg.norm(to_cam) + 1e-9))
            r = FX * wheel_r / z[0]
            cv.fill_ellipse(uv[0], max(r * fore, 0.5), r, np.array([20, 20, 22]), oid)
            cv.fill_ellipse(uv[0], max(r * fore * 0.5, 0.4), r * 0.5, np.array([150, 150, 155]), oid)


def draw_obstacle(cv, cam, obj, oid, rng, light):
    x, y, kind = obj['x'], obj['y'], obj['kind']
    face = math.atan2(y, x)
    if kind == 'cone':
        h, b = obj['h'], obj['w']
        base = billboard((x, y), face, b, 0.0, 0.05)
        cv.fill_polygon(cam.project(base)[0], np.array([30, 30, 30]), oid)
        body = np.array([[x, y, 0.05], [x, y, h]])
        (bot, top), _ = cam.project(body)
        _, z = cam.project(np.array([x, y, 0.05]))
        if z[0] <= 0.3:
            return
        half = FX * b * 0.4 / z[0]
        orange = np.array([255, rng.uniform(80, 140), 0]) * rng.uniform(0.7, 1.0)
        cv.fill_polygon(np.array([[bot[0] - half, bot[1]], [bot[0] + half, bot[1]], [top[0], top[1]]]), orange, oid)
        for f in (0.35, 0.6):
            yb, yt = bot[1] + (top[1] - bot[1]) * f, bot[1] + (top[1] - bot[1]) * (f + 0.1)
            hb, ht = half * (1 - f), half * (1 - f - 0.1)
            cv.fill_polygon(np.array([[bot[0] - hb, yb], [bot[0] + hb, yb], [bot[0] + ht, yt], [bot[0] - ht, yt]]),
                            np.array([240, 240, 240]), oid)
    elif kind == 'barrel':
        h, r = obj['h'], obj['w'] / 2
        bands = 5
        colors = [np.array([250, 110, 20]), np.array([245, 245, 245])]
        for k in range(bands):
            quad = billboard((x, y), face, 2 * r, h * k / bands, h * (k + 1) / bands)
            cv.fill_polygon(cam.project(quad)[0], colors[k % 2] * (0.8 + 0.1 * (k % 2)), oid)
        top_c, z = cam.project(np.array([x, y, h]))
        if z[0] > 0.3:
            rr = FX * r / z[0]
            cv.fill_ellipse(top_c[0], rr, rr * 0.25, np.array([60, 60, 60]), oid)
    else:  # A-frame barrier: two legs and a striped panel
        h, w = obj['h'], obj['w']
        lateral = np.array([-math.sin(face), math.cos(face)])
        for sgn in (-1, 1):
            foot = np.array([x, y]) + lateral * (w / 2 - 0.05) * sgn
            leg = billboard(foot, face, 0.08, 0.0, h)
            cv.fill_polygon(cam.project(leg)[0], np.array([90, 90, 90]), oid)
        panel = billboard((x, y), face, w, 0.55 * h, h)
        uv, z = cam.project(panel)
        if np.all(z > 0.3):
            a, b = random_color(rng, dark_ok=False), np.array([250, 250, 250])
            period = max(abs(uv[1, 0] - uv[0, 0]) / 6.0, 2.0)
            cv.fill_polygon(uv, a, oid, shade=None)
            # Diagonal stripes inside the panel's bounding box.
            x0, x1 = int(max(uv[:, 0].min(), 0)), int(min(uv[:, 0].max(), W - 1))
            y0, y1 = int(max(uv[:, 1].min(), 0)), int(min(uv[:, 1].max(), H - 1))
            if x1 > x0 and y1 > y0:
                u, v = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))
                stripe = (((u + v) / period).astype(int) % 2 == 0) & (cv.ids[y0:y1 + 1, x0:x1 + 1] == oid)
                cv.rgb[y0:y1 + 1, x0:x1 + 1][stripe] = b


def random_objects(rng: np.random.Generator):
    objs = []
    for _ in range(int(rng.integers(2, 9))):
        cls = rng.choice(['person', 'vehicle', 'obstacle'], p=[0.4, 0.35, 0.25])
        x = rng.uniform(5.0, 55.0)
        y = rng.uniform(-12.0, 12.0)
        if abs(math.atan2(y, x)) > 0.6:  # keep most inside the 65° field of view
            y *= 0.5
        o = {'class': cls, 'x': x, 'y': y}
        if cls == 'person':
            o.update(h=rng.uniform(1.15, 1.95))
        elif cls == 'vehicle':
            kind = 'van' if rng.random() < 0.3 else 'car'
            o.update(kind=kind, yaw=rng.uniform(-math.pi, math.pi), l=rng.uniform(3.8, 5.4),
                     w=rng.uniform(1.7, 2.0), h=rng.uniform(1.4, 2.1 if kind == 'van' else 1.65))
        else:
            kind = rng.choice(['cone', 'barrel', 'barrier'])
            size = {'cone': (0.75, 0.4), 'barrel': (0.95, 0.6), 'barrier': (1.05, 1.3)}[kind]
            o.update(kind=kind, h=size[0] * rng.uniform(0.85, 1.15), w=size[1] * rng.uniform(0.85, 1.15))
        # No two objects on the same spot.
        if all(math.hypot(o['x'] - p['x'], o['y'] - p['y']) > 2.5 for p in objs):
            objs.append(o)
    return objs


def post_process(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = rgb * rng.uniform(0.75, 1.2)
    if rng.random() < 0.5:  # lens blur, separable [1 2 1]/4
        img = (np.roll(img, 1, 0) + 2 * img + np.roll(img, -1, 0)) / 4
        img = (np.roll(img, 1, 1) + 2 * img + np.roll(img, -1, 1)) / 4
    u, v = np.meshgrid(np.arange(W) - CX, np.arange(H) - CY)
    vignette = 1.0 - rng.uniform(0.0, 0.35) * (u ** 2 + v ** 2) / (CX ** 2 + CY ** 2)
    img = img * vignette[..., None]
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.85, 1.2)
    img += rng.normal(0, rng.uniform(1.0, 5.0), img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render(rng: np.random.Generator):
    cam = Camera(rng)
    cv = Canvas()
    draw_background(cv, cam, rng)
    el, az = rng.uniform(0.3, 1.3), rng.uniform(-math.pi, math.pi)
    light = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    objs = random_objects(rng)
    # Painter's algorithm: far to near, so nearer objects cover farther ones.
    objs.sort(key=lambda o: -math.hypot(o['x'], o['y']))
    for k, o in enumerate(objs, start=1):
        if o['class'] == 'person':
            draw_person(cv, cam, o, k, rng)
        elif o['class'] == 'vehicle':
            draw_vehicle(cv, cam, o, k, rng, light)
        else:
            draw_obstacle(cv, cam, o, k, rng, light)
    labels = []
    for k, o in enumerate(objs, start=1):
        ys, xs = np.nonzero(cv.ids == k)
        if len(xs) == 0:
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        labels.append({'class': o['class'], 'bbox': [x0, y0, x1 - x0, y1 - y0], 'visible': int(len(xs)),
                       'difficult': len(xs) < 50 or (y1 - y0) < 10, 'shape': o.get('kind', o['class'])})
    return post_process(cv.rgb, rng), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', required=True, type=Path)
    ap.add_argument('--frames', type=int, default=300)
    ap.add_argument('--seed', type=int, default=1)
    args = ap.parse_args()
    (args.out / 'images').mkdir(parents=True, exist_ok=True)
    coco = {'info': {'description': 'cross_renderer.py independent street scenes', 'seed': args.seed},
            'images': [], 'annotations': [], 'categories': CATEGORIES}
    cat = {c['name']: c['id'] for c in CATEGORIES}
    for i in range(args.frames):
        rng = np.random.default_rng([args.seed, i])
        rgb, labels = render(rng)
        name = f'images/{i:05d}.png'
        write_png(args.out / name, rgb)
        coco['images'].append({'id': i + 1, 'file_name': name, 'width': W, 'height': H})
        for lab in labels:
            x, y, w, h = lab['bbox']
            coco['annotations'].append({'id': len(coco['annotations']) + 1, 'image_id': i + 1,
                                        'category_id': cat[lab['class']], 'bbox': [x, y, w, h], 'area': lab['visible'],
                                        'iscrowd': int(lab['difficult']), 'shape': lab['shape']})
    (args.out / 'annotations.json').write_text(json.dumps(coco))
    print(json.dumps({'frames': args.frames, 'annotations': len(coco['annotations']), 'out': str(args.out)}))


if __name__ == '__main__':
    main()

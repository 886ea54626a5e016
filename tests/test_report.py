"""fusion_replay --report: the HTML page opened in headless Chromium (Debian's, as a user
would open it), with its events, summaries and ground-truth scores checked against the
replay's own files and scripts/evaluate_replay.py."""
from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
import sys
import time

import pytest
from conftest import ROOT, binary, child_env

sys.path.insert(0, str(ROOT / 'scripts'))
from evaluate_replay import evaluate  # noqa: E402

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'


def chromium(*args, timeout=120):
    """Headless Chromium as the issue names it; console messages go to stderr."""
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--enable-logging=stderr', '--v=0',
           '--no-first-run', '--disable-extensions', '--virtual-time-budget=10000', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def report_data(page):
    m = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', page.read_text(), re.S)
    assert m, 'the report holds its data'
    return json.loads(m.group(1))


@pytest.fixture(scope='module')
def report(scenario_bags, tmp_path_factory):
    """The mixed scenario (every event kind the simulator stages) replayed with the shipped
    parameters (the CenterNet detector), summarized by the language model, into a report."""
    bag = scenario_bags('mixed', 20)
    out = tmp_path_factory.mktemp('report')
    page = out / 'report.html'
    res = subprocess.run([binary('fusion_replay'), str(bag), '--params', str(ROOT / 'config/fusion.yaml'),
                          '--out', str(out / 'replay'), '--summaries', '--report', str(page)],
                         capture_output=True, text=True, env=child_env(), timeout=900)
    assert res.returncode == 0, res.stderr
    return bag, out / 'replay', page, res.stderr


def test_the_report_renders_in_chromium_with_every_event_and_summary(report):
    bag, replay, page, _ = report
    assert CHROMIUM and shutil.which(CHROMIUM), 'chromium is installed by scripts/setup.sh --test-peers'
    res = chromium('--dump-dom', page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    console = [line for line in res.stderr.splitlines() if 'CONSOLE' in line]
    assert not [c for c in console if re.search(r'error|uncaught', c, re.I)], console
    # The script ran to its end with no error caught.
    assert 'data-rendered="ok"' in dom, dom[:2000]

    events = [json.loads(line) for line in (replay / 'events.jsonl').read_text().splitlines()]
    summaries = [json.loads(line) for line in (replay / 'summaries.jsonl').read_text().splitlines()]
    assert len(events) >= 5 and summaries, (len(events), len(summaries))
    markers = re.findall(r'<circle[^>]*class="event-marker"[^>]*data-event-id="(\d+)"', dom)
    assert sorted(int(m) for m in markers) == sorted(e['event_id'] for e in events)
    for s in summaries:
        assert html.escape(s['text'], quote=False) in dom, s['text']
    # The bird's-eye view draws the safety zone, and a camera card shows boxes for events.
    assert 'class="zone"' in dom
    assert re.search(r'<svg[^>]*class="thumbnail"', dom)
    assert 'class="detection-box"' in dom or 'class="lidar-box"' in dom


def test_the_screenshot_is_not_blank(report, tmp_path):
    from PIL import Image
    _, _, page, _ = report
    shot = tmp_path / 'report.png'
    res = chromium(f'--screenshot={shot}', '--window-size=1280,2200', '--hide-scrollbars', page.as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = Image.open(io.BytesIO(shot.read_bytes())).convert('RGB')
    assert img.size == (1280, 2200)
    colours = img.getcolors(maxcolors=1 << 20) or []
    background = max(colours)[1]
    drawn = sum(n for n, c in colours if c != background) / (img.size[0] * img.size[1])
    # Text, timeline, bird's-eye view and thumbnails: measured ~0.3 of the pixels.
    assert len(colours) > 200 and drawn > 0.05, (len(colours), drawn)


def test_the_scores_agree_with_evaluate_replay(report):
    bag, replay, page, stderr = report
    data = report_data(page)
    r = evaluate(bag, replay)
    per_kind = data['truth']['per_kind']
    assert sum(k['truth'] for k in per_kind.values()) == len(r['events'])
    assert sum(k['detected'] for k in per_kind.values()) == sum(e['detected'] for e in r['events'])
    assert sum(k['false_alarms'] for k in per_kind.values()) == len(r['false_alarms'])
    assert sorted(d for k in per_kind.values() for d in k['delays_s']) == sorted(round(d, 3) for d in r['delays_s'])
    # What produced the run is in it: the detector's weights by hash, the parameters used.
    produced = data['produced_by']
    manifest = json.loads((ROOT / 'models/weights/detector.json').read_text())
    assert produced['models']['camera_detector_weights']['sha256'] == manifest['sha256']
    assert produced['params']['params_file'].endswith('config/fusion.yaml')
    assert re.search(r'report written to .* in [0-9.]+ s', stderr), stderr


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class DevTools:
    """The Chrome DevTools protocol over its WebSocket: enough to evaluate in the page."""

    def __init__(self, port, deadline=30):
        import urllib.request

        import websocket

        end = time.monotonic() + deadline
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f'http://127.0.0.1:{port}/json', timeout=2))
                page = next(t for t in targets if t['type'] == 'page')
                break
            except Exception:
                assert time.monotonic() < end, 'chromium offered no DevTools page'
                time.sleep(0.2)
        self.ws = websocket.create_connection(page['webSocketDebuggerUrl'], timeout=10)
        self.next_id = 0

    def evaluate(self, expression):
        self.next_id += 1
        self.ws.send(json.dumps({'id': self.next_id, 'method': 'Runtime.evaluate',
                                 'params': {'expression': expression, 'returnByValue': True}}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get('id') == self.next_id:
                return reply['result']['result'].get('value')


def test_the_live_view_shows_an_event_within_a_second(procs, ros, tmp_path):
    """fusion_view serves the page on the loopback; Chromium opens it; an AnomalyEvent
    published over DDS (rclpy) appears in the page within 1 s, and objects draw."""
    from fusion_msgs.msg import AnomalyEvent, FusedObject, FusedObjectArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    view_port, devtools_port = free_port(), free_port()
    view = procs([binary('fusion_view'), '--port', str(view_port)], name='fusion_view')
    probe = ros()
    latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    events = probe.publisher('/anomaly/events', AnomalyEvent, latched)
    objects = probe.publisher('/fusion/objects', FusedObjectArray)
    probe.wait_subscribers('/anomaly/events')
    browser = procs([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', f'--remote-debugging-port={devtools_port}',
                     f'--user-data-dir={tmp_path / "chromium"}', '--no-first-run', f'http://127.0.0.1:{view_port}/'],
                    name='chromium')
    page = DevTools(devtools_port)
    end = time.monotonic() + 20
    while 'connected' not in (page.evaluate("document.getElementById('status').textContent") or ''):
        assert time.monotonic() < end, f'the page did not connect\n{view.output()[-2000:]}\n{browser.output()[-2000:]}'
        time.sleep(0.1)

    arr = FusedObjectArray()
    o = FusedObject(track_id=4, label='person', time_to_collision=2.5)
    o.pose.position.x, o.pose.orientation.w, o.dimensions.x, o.dimensions.y = 9.0, 1.0, 0.6, 0.6
    arr.objects = [o]
    delays = []
    for event_id in (101, 102, 103):
        e = AnomalyEvent(event_id=event_id, kind='zone_intrusion', severity=2, rule='track_inside_zone', zone='forward')
        e.track_ids = [4]
        published = time.monotonic()
        events.publish(e)
        objects.publish(arr)
        query = f"document.querySelector('li.live-event[data-event-id=\"{event_id}\"]') !== null"
        while not page.evaluate(query):
            assert time.monotonic() - published < 5, f'event {event_id} never shown\n{view.output()[-2000:]}'
            time.sleep(0.01)
        delays.append(time.monotonic() - published)
    print(json.dumps({'event_shown_s': [round(d, 3) for d in delays]}))
    assert max(delays) <= 1.0, delays
    assert page.evaluate("document.querySelectorAll('g.live-track').length") == 1
    assert '#4 person TTC 2.5 s' in page.evaluate("document.getElementById('bev').textContent")
    # Nothing was lost, and the page is served on the loopback only.
    import urllib.request
    stats = json.load(urllib.request.urlopen(f'http://127.0.0.1:{view_port}/stats', timeout=5))
    assert stats['clients'] >= 1 and not sum(stats['dropped'].values()), stats
    assert f'http://127.0.0.1:{view_port}/' in view.output()

"""fusion_node's deadline scheduler in the launched node set, over DDS: without the
capability to use real-time priorities (CAP_SYS_NICE dropped from the bounding set, no
RLIMIT_RTPRIO) it warns once and runs on normal scheduling; sets published from a bag played
with `--restamp` (real latency on the wall clock, no sim time) meet the hard deadline; the
`trace_file` it writes at shutdown is a Chrome trace of the stage runs."""
from __future__ import annotations

import ctypes
import json
import resource
import subprocess

from conftest import binary, child_env, simulate
from test_launch import launch_env, launcher

CAP_SYS_NICE = 23
PR_CAPBSET_DROP = 24


def without_rt_capability():
    """preexec_fn: the child and everything it starts lose CAP_SYS_NICE for good."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), 'prctl(PR_CAPBSET_DROP)')
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))


def test_scheduler_without_rt_capability_warns_once_meets_deadlines_and_writes_a_trace(ros, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import FusedObjectArray

    bag = tmp_path / 'nominal_31'
    simulate(bag, 'nominal', 31, 8)
    trace = tmp_path / 'fusion_trace.json'
    probe = ros()
    probe.subscribe('/fusion/objects', FusedObjectArray)
    probe.subscribe('/diagnostics', DiagnosticArray)
    log = open(tmp_path / 'launch.log', 'wb')
    launch = subprocess.Popen([launcher(), 'sensor_fusion', 'fusion.launch.xml', f'trace_file:={trace}', '--grace', '10'],
                              stdout=log, stderr=subprocess.STDOUT, env=launch_env(), start_new_session=True,
                              preexec_fn=without_rt_capability)
    try:
        probe.wait_publishers('/fusion/objects', timeout=40)
        probe.wait_publishers('/sensors/lidar', timeout=40)
        res = subprocess.run([binary('fusion_bag'), 'play', str(bag), '--restamp', '--wait-for-subscribers', '--delay', '1'],
                             capture_output=True, text=True, env=child_env(), timeout=120)
        assert res.returncode == 0, res.stderr
        probe.wait_for(lambda: len(probe.get('/fusion/objects')) >= 60, 15, '/fusion/objects')
        probe.wait_for(lambda: any(kv.key == 'rt.fusion' for m in probe.get('/diagnostics') for s in m.status
                                   for kv in s.values), 10, 'rt.fusion on /diagnostics')
    finally:
        launch.send_signal(2)
        launch.wait(60)
        log.close()
    out = (tmp_path / 'launch.log').read_text(errors='replace')
    node_lines = [l for l in out.splitlines() if 'fusion_node' in l]
    # One clear warning, then normal scheduling: never a failure.
    warnings = [l for l in node_lines if 'real-time scheduling not permitted' in l]
    assert len(warnings) == 1, '\n'.join(node_lines[-40:])
    assert 'SCHED_FIFO' in warnings[0] and 'CAP_SYS_NICE' in warnings[0]
    values = {}
    for m in probe.get('/diagnostics'):
        for s in m.status:
            if s.name.endswith('fusion_node: fusion'):
                values.update({kv.key: kv.value for kv in s.values})
    for role in ('fusion', 'inference', 'cpu_worker'):
        assert values[f'rt.{role}'].startswith('fallback: SCHED_FIFO'), values
    objs = probe.get('/fusion/objects')
    # 8 s of 10 Hz LiDAR: most sets published, none after the hard deadline (real latency:
    # driver stamp → ingest → DDS → fusion_node → publication).
    assert len(objs) >= 60, len(objs)
    assert max(o.latency_ms for o in objs) <= 100.0, sorted(o.latency_ms for o in objs)[-5:]
    assert 0.0 < sorted(o.latency_ms for o in objs)[len(objs) // 2] < 50.0
    # The trace: stage spans on the scheduler's named threads.
    doc = json.loads(trace.read_text())
    spans = [e for e in doc['traceEvents'] if e['ph'] == 'X']
    names = {e['name'] for e in spans}
    assert {'preprocess', 'detector', 'clustering', 'fuse'} <= names, names
    threads = {e['args']['name'] for e in doc['traceEvents'] if e['ph'] == 'M'}
    assert threads == {'fusion', 'inference', 'cpu worker'}
    assert sum(1 for e in spans if e['name'] == 'fuse') >= len(objs)
    assert all(e['dur'] >= 0 and 'set_stamp_ns' in e['args'] for e in spans)

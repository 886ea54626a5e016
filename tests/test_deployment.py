"""Nothing leaves the device unless the user says so (issue 21): the launched node set in its
shipped profile, seen from other hosts. The hosts are network namespaces made here (ip netns
and a veth pair each, torn down after; only these namespaces' addresses are ever targeted).
A raw socket on the veth counts the RTPS packets our side sends; an rclpy participant inside
each namespace tries to discover the node set's topics."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from test_launch import launch_env, launcher

# Two other hosts, each on its own link to this one.
HOSTS = {'a': ('sf_host_a', 'sfa0', 'sfa1', '10.231.1.1', '10.231.1.2'),
         'b': ('sf_host_b', 'sfb0', 'sfb1', '10.231.2.1', '10.231.2.2')}

# RTPS packets on an interface (AF_PACKET, both directions) whose IPv4 source is `ours`.
SNIFF = r'''
import json, socket, sys, time
iface, ours, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind((iface, 0))
s.settimeout(0.2)
end, sent, seen = time.monotonic() + seconds, 0, 0
while time.monotonic() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    if len(f) < 42 or f[12:14] != b'\x08\x00' or f[23] != 17:
        continue
    payload = f[14 + (f[14] & 0x0f) * 4 + 8:]
    if payload[:4] == b'RTPS':
        seen += 1
        sent += socket.inet_ntoa(f[26:30]) == ours
print(json.dumps({'rtps_seen': seen, 'rtps_from_us': sent}))
'''

# A participant on the other host: which of the node set's topics it discovers in `seconds`.
PEER = r'''
import json, sys, time, rclpy
rclpy.init()
node = rclpy.create_node('sf_other_host')
end, found = time.monotonic() + float(sys.argv[1]), []
while time.monotonic() < end and '/fusion/objects' not in found:
    rclpy.spin_once(node, timeout_sec=0.2)
    found = [name for name, _ in node.get_topic_names_and_types()]
print(json.dumps({'topics': sorted(t for t in found if t.startswith(('/fusion', '/sensors', '/anomaly')))}))
'''


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope='module')
def hosts():
    made = []
    try:
        for ns, here, there, our_ip, their_ip in HOSTS.values():
            sh('ip', 'netns', 'del', ns)  # a previous run's, if it was killed
            for cmd in (['ip', 'netns', 'add', ns],
                        ['ip', 'link', 'add', here, 'type', 'veth', 'peer', 'name', there],
                        ['ip', 'link', 'set', there, 'netns', ns],
                        ['ip', 'addr', 'add', f'{our_ip}/24', 'dev', here],
                        ['ip', 'link', 'set', here, 'up'],
                        ['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', f'{their_ip}/24', 'dev', there],
                        ['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', there, 'up'],
                        ['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'],
                        ['ip', 'netns', 'exec', ns, 'ip', 'route', 'add', '224.0.0.0/4', 'dev', there]):
                res = sh(*cmd)
                if res.returncode != 0 and cmd[:3] == ['ip', 'netns', 'add'] and 'ermission' in res.stderr:
                    pytest.skip(f'network namespaces need root (CAP_NET_ADMIN): {res.stderr.strip()}')
                assert res.returncode == 0, (cmd, res.stderr)
                if cmd[:3] == ['ip', 'netns', 'add']:
                    made.append((ns, here))
        yield HOSTS
    finally:
        for ns, here in made:
            sh('ip', 'link', 'del', here)
            sh('ip', 'netns', 'del', ns)


def launch_node_set(procs, probe, *args):
    """The shipped launch file, in an environment that chose nothing about discovery."""
    env = launch_env(ROS_AUTOMATIC_DISCOVERY_RANGE=None, ROS_STATIC_PEERS=None)
    launched = procs([launcher(), 'sensor_fusion', 'fusion.launch.xml', *args], name='launch', env=env)
    # The test's own participant is on this computer (LOCALHOST): it must see the set.
    probe.wait_for(lambda: '/fusion/objects' in dict(probe.node.get_topic_names_and_types()), 60,
                   f'the node set up:\n{launched.output()[-3000:]}')
    return launched


def look_from(hosts, host, seconds=6.0, **env):
    """Runs the other host's participant in `host` while both links are watched: what it
    discovered, and the RTPS packets our side sent on each link."""
    sniffers = {name: subprocess.Popen([sys.executable, '-c', SNIFF, here, our_ip, str(seconds + 1.0)],
                                       stdout=subprocess.PIPE, text=True)
                for name, (_, here, _, our_ip, _) in hosts.items()}
    try:
        # rclpy's own environment (its C extension needs LD_LIBRARY_PATH), discovery as given.
        peer_env = {k: v for k, v in os.environ.items() if k not in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_STATIC_PEERS')}
        peer = subprocess.run(['ip', 'netns', 'exec', hosts[host][0], sys.executable, '-c', PEER, str(seconds)],
                              capture_output=True, text=True, timeout=60, env={**peer_env, **env})
        assert peer.returncode == 0, peer.stderr
        sent = {name: json.loads(s.communicate(timeout=30)[0]) for name, s in sniffers.items()}
    finally:
        for s in sniffers.values():
            s.kill()
            s.wait()
    return json.loads(peer.stdout)['topics'], sent


def test_by_default_nothing_leaves_the_computer(hosts, procs, ros):
    """The shipped launch file with no discovery settings in the environment: a participant
    on another host (looking across the whole subnet) discovers nothing, and not one RTPS
    packet from this computer is on either link. The same launch with discovery_range:=SUBNET
    is seen at once, so the watch would have caught it."""
    probe = ros()
    launched = launch_node_set(procs, probe)
    topics, sent = look_from(hosts, 'a', ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET')
    print(json.dumps({'default': {'topics': topics, 'links': sent}}))
    assert topics == [] and all(s['rtps_from_us'] == 0 for s in sent.values()), (topics, sent)
    # The other host was there and talking: its own announcements crossed the link.
    assert sent['a']['rtps_seen'] > 0, sent
    launched.stop()

    launch_node_set(procs, probe, 'discovery_range:=SUBNET')
    topics, sent = look_from(hosts, 'a', ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET')
    print(json.dumps({'subnet': {'topics': len(topics), 'links': sent}}))
    assert '/fusion/objects' in topics and sent['a']['rtps_from_us'] > 0, (topics, sent)


def test_static_peers_reach_the_listed_host_and_no_other(hosts, procs, ros):
    """The multi-host profile: static_peers names host a. Host a (naming this computer in
    turn) discovers the node set; host b, looking across its subnet, discovers nothing and
    gets not one packet."""
    probe = ros()
    launch_node_set(procs, probe, f"static_peers:={hosts['a'][4]}")
    topics, _ = look_from(hosts, 'a', ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_STATIC_PEERS=hosts['a'][3])
    assert '/fusion/objects' in topics, topics
    print(json.dumps({'static_peer_a': {'topics': len(topics)}}))
    topics, sent = look_from(hosts, 'b', ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET')
    print(json.dumps({'unlisted_b': {'topics': topics, 'links': sent}}))
    assert topics == [] and sent['b']['rtps_from_us'] == 0, (topics, sent)
    assert sent['b']['rtps_seen'] > 0, sent


def cpu_seconds_of_children(pid: int) -> float:
    """User + system CPU seconds of the processes whose parent is `pid` (a launch's nodes)."""
    total, tick = 0.0, os.sysconf('SC_CLK_TCK')
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            fields = open(f'/proc/{entry}/stat').read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def test_two_robots_on_one_host_keep_apart(scenario_bags, procs, ros):
    """Several robots on one compute host (issue 21): two namespaced node sets
    (namespace:=robot1, robot2) driven by two bags at once, on the wall clock (--restamp: one
    /clock cannot serve two bags). robot1's bag is a pedestrian intrusion, robot2's an IMU
    impact: each robot's events are its own bag's (checked by content), and /diagnostics,
    which both share, names each robot's nodes apart."""
    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import AnomalyEvent

    from conftest import binary
    bags = {'robot1': scenario_bags('pedestrian_intrusion', 12), 'robot2': scenario_bags('imu_impact', 12)}
    probe = ros()
    for robot in bags:
        probe.subscribe(f'/{robot}/anomaly/events', AnomalyEvent)
    probe.subscribe('/diagnostics', DiagnosticArray)
    launches = {robot: procs([launcher(), 'sensor_fusion', 'fusion.launch.xml', f'namespace:={robot}', '--grace', '3'],
                             name=f'launch_{robot}', env=launch_env()) for robot in bags}
    for robot in bags:
        probe.wait_publishers(f'/{robot}/anomaly/events', timeout=60)
        probe.wait_subscribers(f'/{robot}/lidar/points', timeout=60)
    topics = ['/camera/image_raw', '/camera/camera_info', '/lidar/points', '/radar/points', '/imu/data']
    players = {robot: procs([binary('fusion_bag'), 'play', str(bag), '--restamp', '--wait-for-subscribers', '--delay', '1',
                             '--topics', *topics, '--remap', *[f'{t}:=/{robot}{t}' for t in topics]], name=f'play_{robot}')
               for robot, bag in bags.items()}
    for player in players.values():
        assert player.p.wait(120) == 0, player.output()

    def kinds(robot):
        return {e.kind for e in probe.get(f'/{robot}/anomaly/events')}
    probe.wait_for(lambda: 'zone_intrusion' in kinds('robot1') and 'impact' in kinds('robot2'), 20,
                   f"each robot's own event; got { {r: kinds(r) for r in bags} }")
    assert 'impact' not in kinds('robot1') and 'zone_intrusion' not in kinds('robot2'), {r: kinds(r) for r in bags}
    names = {s.name for m in probe.get('/diagnostics') for s in m.status}
    for robot in bags:
        assert {f'{robot}/fusion_node: fusion', f'{robot}/summarizer: summaries',
                f'{robot}/camera_ingest: camera ingest'} <= names, sorted(names)
    print(json.dumps({'cpu_s_per_robot': {r: round(cpu_seconds_of_children(launches[r].p.pid), 1) for r in bags},
                      'events': {r: sorted(kinds(r)) for r in bags}}))

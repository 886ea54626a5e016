"""Nothing leaves the device unless the user says so (issue 21): the launched node set in its
shipped profile, seen from other hosts. The hosts are network namespaces made here (ip netns
and a veth pair each, torn down after; only these namespaces' addresses are ever targeted).
A raw socket on the veth counts the RTPS packets our side sends; an rclpy participant inside
each namespace tries to discover the node set's topics."""
from __future__ import annotations

import json
import os
import select
import signal
from collections import Counter
from pathlib import Path
import subprocess
import sys
import time

import netlan
import pytest
from conftest import binary
from test_launch import launch_env, launcher

# Two other hosts, each on its own link to this one.
HOSTS = {'a': ('sf_host_a', 'sfa0', 'sfa1', '10.231.1.1', '10.231.1.2'),
         'b': ('sf_host_b', 'sfb0', 'sfb1', '10.231.2.1', '10.231.2.2')}

class Capture:
    """tcpdump (Debian's) on an interface, both directions, to a pcap file: afterwards, the
    RTPS packets in it (UDP payload starting "RTPS"; a datagram's later IP fragments carry no
    UDP header and are not counted) and how many of them came from `ours`."""

    RTPS = 'udp and udp[8:4] = 0x52545053'

    def __init__(self, iface: str, ours: str, pcap):
        self.ours, self.pcap = ours, str(pcap)
        self.proc = subprocess.Popen(['tcpdump', '-i', iface, '-w', self.pcap, '-U', '-n'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on" once its socket is open (anything else is its error).
        ready = select.select([self.proc.stderr], [], [], 20)[0]
        line = self.proc.stderr.readline() if ready else ''
        if 'listening on' not in line:
            self.proc.kill()
            raise AssertionError(f'tcpdump on {iface} did not start: {line!r}')

    def count(self, expression: str) -> int:
        res = sh('tcpdump', '-r', self.pcap, '-n', expression)
        assert res.returncode == 0, res.stderr
        return len(res.stdout.splitlines())

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        return {'rtps_seen': self.count(self.RTPS), 'rtps_from_us': self.count(f'{self.RTPS} and src host {self.ours}')}


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


sh = netlan.sh


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


def look_from(hosts, host, tmp_path, seconds=6.0, **env):
    """Runs the other host's participant in `host` while tcpdump watches both links: what it
    discovered, and the RTPS packets our side sent on each link."""
    captures = {}
    try:
        for name, (_, here, _, our_ip, _) in hosts.items():
            captures[name] = Capture(here, our_ip, tmp_path / f'{name}_{host}_{time.monotonic_ns()}.pcap')
        # rclpy's own environment (its C extension needs LD_LIBRARY_PATH), discovery as given.
        # An independent participant: Fast DDS's own transports, no profile of ours.
        drop = ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_STATIC_PEERS', 'FASTRTPS_DEFAULT_PROFILES_FILE')
        peer_env = {k: v for k, v in os.environ.items() if k not in drop}
        peer = subprocess.run(['ip', 'netns', 'exec', hosts[host][0], sys.executable, '-c', PEER, str(seconds)],
                              capture_output=True, text=True, timeout=60, env={**peer_env, **env})
        assert peer.returncode == 0, peer.stderr
        time.sleep(1.0)  # anything our side sent in answer to its last announcements
    finally:
        sent = {name: c.stop() for name, c in captures.items()}
    return json.loads(peer.stdout)['topics'], sent


def test_by_default_nothing_leaves_the_computer(hosts, procs, ros, tmp_path):
    """The shipped launch file with no discovery settings in the environment: a participant
    on another host (looking across the whole subnet) discovers nothing, and not one RTPS
    packet from this computer is on either link. The same launch with discovery_range:=SUBNET
    is seen at once, so the watch would have caught it."""
    probe = ros()
    launched = launch_node_set(procs, probe)
    topics, sent = look_from(hosts, 'a', tmp_path, ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET')
    print(json.dumps({'default': {'topics': topics, 'links': sent}}))
    assert topics == [] and all(s['rtps_from_us'] == 0 for s in sent.values()), (topics, sent)
    # The other host was there and talking: its own announcements crossed the link.
    assert sent['a']['rtps_seen'] > 0, sent
    launched.stop()

    launch_node_set(procs, probe, 'discovery_range:=SUBNET')
    topics, sent = look_from(hosts, 'a', tmp_path, ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET')
    print(json.dumps({'subnet': {'topics': len(topics), 'links': sent}}))
    assert '/fusion/objects' in topics and sent['a']['rtps_from_us'] > 0, (topics, sent)


def test_static_peers_reach_the_listed_host_and_no_other(hosts, procs, ros, tmp_path):
    """The multi-host profile: static_peers names host a. Host a (naming this computer in
    turn) discovers the node set; host b, looking across its subnet, discovers nothing and
    gets not one packet."""
    probe = ros()
    launch_node_set(procs, probe, f"static_peers:={hosts['a'][4]}")
    topics, _ = look_from(hosts, 'a', tmp_path, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_STATIC_PEERS=hosts['a'][3])
    assert '/fusion/objects' in topics, topics
    print(json.dumps({'static_peer_a': {'topics': len(topics)}}))
    topics, sent = look_from(hosts, 'b', tmp_path, ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET')
    print(json.dumps({'unlisted_b': {'topics': topics, 'links': sent}}))
    assert topics == [] and sent['b']['rtps_from_us'] == 0, (topics, sent)
    assert sent['b']['rtps_seen'] > 0, sent


def cpu_seconds_of_children(pid: int) -> float:
    """User + system CPU seconds of the processes whose parent is `pid` (a launch's nodes)."""
    return sum(cpu_by_node(pid).values())


def test_two_robots_on_one_host_keep_apart(scenario_bags, procs, ros):
    """Several robots on one compute host (issue 21): two namespaced node sets
    (namespace:=robot1, robot2) driven by two bags at once, on the wall clock (--restamp: one
    /clock cannot serve two bags). robot1's bag is a pedestrian intrusion, robot2's an IMU
    impact: each robot's events are its own bag's (checked by content), and /diagnostics,
    which both share, names each robot's nodes apart."""
    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import AnomalyEvent
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    bags = {'robot1': scenario_bags('pedestrian_intrusion', 12), 'robot2': scenario_bags('imu_impact', 12)}
    probe = ros()
    latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    for tf in ('/tf_static', '/robot1/tf_static', '/robot2/tf_static'):
        probe.subscribe(tf, TFMessage, latched)
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
    # Each robot's nodes latch the mounts they took from its calibration on its own tf_static,
    # none on the global one another robot's nodes would read.
    for robot in bags:
        children = {t.child_frame_id for m in probe.get(f'/{robot}/tf_static') for t in m.transforms}
        assert {'camera_optical', 'lidar_link', 'radar_link', 'imu_link'} <= children, (robot, children)
    assert probe.count('/tf_static') == 0, probe.get('/tf_static')
    names = {s.name for m in probe.get('/diagnostics') for s in m.status}
    for robot in bags:
        assert {f'{robot}/fusion_node: fusion', f'{robot}/summarizer: summaries',
                f'{robot}/camera_ingest: camera ingest'} <= names, sorted(names)
    # Each robot's share of the host: every node reports its process's CPU on /diagnostics,
    # and a robot's is the sum over its namespace. Checked against what /proc says of the
    # robot's launch (the nodes' last reports lag by up to a diagnostics period each).
    time.sleep(1.5)
    measured = {r: cpu_seconds_of_children(launches[r].p.pid) for r in bags}
    reported, cores = {}, {}
    for robot in bags:
        latest = {}
        for m in probe.get('/diagnostics'):
            for st in m.status:
                values = {kv.key: kv.value for kv in st.values}
                if st.name.startswith(f'{robot}/') and 'cpu.seconds' in values:
                    latest[st.name.split(':')[0]] = values
        assert set(latest) == {f'{robot}/{n}' for n in ('camera_ingest', 'lidar_ingest', 'radar_ingest', 'imu_ingest',
                                                          'fusion_node', 'summarizer')}, sorted(latest)
        reported[robot] = round(sum(float(v['cpu.seconds']) for v in latest.values()), 2)
        cores[robot] = {n: float(v['cpu.cores']) for n, v in latest.items()}
        assert measured[robot] - 3.0 <= reported[robot] <= measured[robot] + 0.2, (robot, reported, measured)
        assert all(0 <= float(v['cpu.host_share']) <= 1 for v in latest.values()), latest
    print(json.dumps({'cpu_s_per_robot': {'proc': {r: round(v, 1) for r, v in measured.items()}, 'diagnostics': reported},
                      'events': {r: sorted(kinds(r)) for r in bags}}))


# ---- the node set split across hosts ----------------------------------------------------
# Three hosts on one LAN (a bridge in a namespace of its own): a sensor box running the ingest
# nodes and the bag player, a compute box running fusion_node and the summarizer, and a
# monitoring station. Each names the other two in ROS_STATIC_PEERS; discovery stays LOCALHOST
# otherwise (the multi-host profile).
SPLIT_HOSTS = netlan.HOSTS

# The monitoring station: an rclpy participant that records what the compute box publishes
# until SIGINT, then writes it to argv[1] as JSON. It prints `ready` once fusion_node is seen
# subscribed to the sensor box's /sensors/* and publishing its outputs.
STATION = r'''
import json, os, signal, sys, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from fusion_msgs.msg import AnomalyEvent, FusedObjectArray
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node('sf_station')
latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
got = {'events': [], 'summaries': [], 'latency_ms': [], 'partial': 0, 'diagnostics': {}}
node.create_subscription(AnomalyEvent, '/anomaly/events',
    lambda m: got['events'].append({'kind': m.kind, 'rule': m.rule, 'sensors': list(m.sensors), 'zone': m.zone, 'stamp': m.header.stamp.sec + m.header.stamp.nanosec * 1e-9,
                                 'measured': m.measured_value, 'threshold': m.threshold,
                                 'evidence': {kv.key: kv.value for kv in m.evidence}}), latched)
node.create_subscription(String, '/anomaly/summary', lambda m: got['summaries'].append(m.data), latched)
def objects(m):
    got['latency_ms'].append(m.latency_ms)
    got['partial'] += bool(m.partial)
node.create_subscription(FusedObjectArray, '/fusion/objects', objects, 100)
def diagnostics(m):
    for s in m.status:
        got['diagnostics'][s.name] = {kv.key: kv.value for kv in s.values}
node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 100)
stop = []
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
ready = False
snapshot_at = 0.0
while not stop:
    rclpy.spin_once(node, timeout_sec=0.1)
    if time.monotonic() >= snapshot_at:  # the latest diagnostics, for the test to watch the counts settle
        snapshot_at = time.monotonic() + 0.5
        json.dump(got['diagnostics'], open(sys.argv[1] + '.tmp', 'w'))
        os.replace(sys.argv[1] + '.tmp', sys.argv[1] + '.diagnostics')
    if not ready and node.count_publishers('/anomaly/events') and node.count_publishers('/fusion/objects') \
            and all(node.count_subscribers(f'/sensors/{s}') and node.count_publishers(f'/sensors/{s}') for s in ('camera', 'lidar', 'radar', 'imu')):
        ready = True
        print('ready', flush=True)
json.dump(got, open(sys.argv[1], 'w'))
'''


@pytest.fixture(scope='module')
def lan():
    """The three hosts and their LAN, torn down after."""
    try:
        netlan.make_lan()
    except netlan.NoNamespaces as e:
        pytest.skip(f'network namespaces need root (CAP_NET_ADMIN): {e}')
    # The hosts run with the package's kernel settings; its socket-buffer defaults are not per
    # namespace, so they are set on this machine for these tests and put back after.
    replaced = netlan.set_sysctl([(k, v) for k, v in netlan.shipped_sysctl() if k.startswith('net.core.')])
    try:
        yield SPLIT_HOSTS
    finally:
        netlan.set_sysctl(replaced)
        netlan.remove_lan()


on_host = netlan.on_host
link_bytes = netlan.link_bytes


def host_env(host: str, **kw):
    """A host's launch environment in the multi-host profile."""
    return netlan.profile_env(host, launch_env(**kw))


def station_env():
    """rclpy's own environment (its C extension needs LD_LIBRARY_PATH) in the station's profile."""
    return netlan.profile_env('station')


def cpu_by_node(pid: int) -> dict[str, float]:
    """CPU seconds of each node a launch started (its children), by executable name."""
    out, tick = {}, os.sysconf('SC_CLK_TCK')
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            head, tail = open(f'/proc/{entry}/stat').read().rsplit(')', 1)
        except OSError:
            continue
        fields = tail.split()
        if int(fields[1]) == pid:
            name = head.split('(', 1)[1]
            out[name] = round(out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick, 2)
    return out


def lose_packets(host: str, percent: int):
    """Drops `percent` % of the packets arriving on a host's LAN link, each on its own draw
    (nftables on the netdev ingress hook, before IP reassembly: a lost packet is one of the
    ~44 fragments of a 64 KB UDP datagram, as on a real lossy link)."""
    ns, link, _ = SPLIT_HOSTS[host]
    rules = (f'table netdev sf_loss {{ chain lossy {{ type filter hook ingress device "{link}1" priority 0; '
             f'numgen random mod 100 < {percent} counter drop\n}}\n}}\n')
    res = subprocess.run(['ip', 'netns', 'exec', ns, 'nft', '-f', '-'], input=rules, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr


# The kernel settings the package ships for hosts that exchange its large messages
# (config/sysctl-sensor_fusion.conf): the IP reassembly pool's, per network namespace here.
TUNING = [(k, v) for k, v in netlan.shipped_sysctl() if k.startswith('net.ipv4.')]
LINUX_DEFAULTS = [('net.ipv4.ipfrag_time', '30'), ('net.ipv4.ipfrag_high_thresh', '4194304')]


def lost_packets(host: str) -> int:
    ns = SPLIT_HOSTS[host][0]
    res = sh('ip', 'netns', 'exec', ns, 'nft', '-j', 'list', 'table', 'netdev', 'sf_loss')
    assert res.returncode == 0, res.stderr
    return sum(e['counter']['packets'] for item in json.loads(res.stdout)['nftables'] if 'rule' in item
               for e in item['rule']['expr'] if 'counter' in e)


def run_across_hosts(procs, tmp_path, bag, placement: dict[str, str], label: str, while_playing=None,
                     launch_args=(), player_host=None) -> dict:
    """Launches the node set with `placement` ({host: role}, and `launch_args` for each),
    plays `bag` on the sensor box (`player_host`, else whichever host runs the ingest nodes)
    on sim time, and returns what the station saw, with the CPU of every node per host."""
    record = tmp_path / f'station_{label}.json'
    # Each host keeps its own disk: the summarizer's journal of done events is per run here.
    homes = {host: tmp_path / f'home_{label}_{host}' for host in placement}
    for home in homes.values():
        home.mkdir()
    station = procs(on_host('station', sys.executable, '-u', '-c', STATION, str(record)), name=f'station_{label}',
                    env=station_env())
    launches = {host: procs(on_host(host, launcher(), 'sensor_fusion', 'fusion.launch.xml', f'role:={role}',
                                    'use_sim_time:=true', *launch_args, '--grace', '3'),
                            name=f'launch_{label}_{host}', env=host_env(host, ROS_HOME=str(homes[host])))
                for host, role in placement.items()}
    deadline = time.monotonic() + 60
    while 'ready' not in station.output():
        assert time.monotonic() < deadline and station.alive(), \
            f'the station never saw the whole graph:\n' + '\n'.join(p.output()[-2000:] for p in launches.values())
        time.sleep(0.2)
    # The station saw every endpoint; give the ingest nodes' writers a few discovery
    # announcements (0.5 s apart) to match fusion_node's readers on the other host, so a
    # message published before that (volatile QoS: not delivered) is not counted as lost.
    time.sleep(2.0)
    player_host = player_host or next(h for h, role in placement.items() if role in ('all', 'sensors'))
    sent_before = {host: link_bytes(host)['tx'] for host in SPLIT_HOSTS}
    player = procs(on_host(player_host, binary('fusion_bag'), 'play', str(bag), '--clock', '200', '--wait-for-subscribers',
                           '--delay', '1'), name=f'play_{label}', env=host_env(player_host))
    if while_playing:
        while_playing()
    assert player.p.wait(120) == 0, player.output()
    time.sleep(4.0)  # the last sets, the summaries and a /diagnostics period after the bag
    wait_for_counts_to_settle(Path(f'{record}.diagnostics'))
    cpu = {host: cpu_by_node(p.p.pid) for host, p in launches.items()}
    sent_mb = {host: round((link_bytes(host)['tx'] - sent_before[host]) / 1e6, 1) for host in SPLIT_HOSTS}
    station.stop()
    for p in launches.values():
        p.stop()
    seen = json.loads(record.read_text())
    seen['cpu_s'] = cpu
    seen['sent_mb'] = sent_mb
    return seen


def wait_for_counts_to_settle(snapshot: Path, longest_s: float = 20.0):
    """Waits until the sensor counts the station sees agree, or stop changing. The ingest
    nodes' and fusion_node's /diagnostics come from different hosts once a second, and after
    a lossy link a host's latest report can reach the station seconds late: a snapshot taken
    a fixed 4 s after the bag has read a camera count 1 behind and 2 ahead of the other side
    (clean-clone CI, 2026-12-05 and 12-07) with nothing lost. A real loss does not settle to
    zero: it stays put, and is reported once its counts have not moved for 6 s."""
    deadline = time.monotonic() + longest_s
    last, unchanged_since = None, time.monotonic()
    while time.monotonic() < deadline:
        try:
            diag = json.loads(snapshot.read_text())
            counts = {name: {k: v for k, v in values.items() if k.startswith(('accepted', 'dropped', 'received'))}
                      for name, values in diag.items()}
            loss = sensor_loss({'diagnostics': diag})
        except (OSError, ValueError, KeyError):
            time.sleep(0.5)  # not written yet, or a node's first report still to come
            continue
        if counts != last:
            last, unchanged_since = counts, time.monotonic()
        steady_s = time.monotonic() - unchanged_since
        # Zero loss held over two reports (a late count could still land), or counts that stay.
        if (not any(loss.values()) and steady_s >= 1.2) or steady_s >= 6.0:
            return
        time.sleep(0.5)


def event_kinds(seen) -> dict[str, int]:
    return dict(Counter(e['kind'] for e in seen['events']))


def sensor_loss(seen) -> dict[str, int]:
    """Messages each ingest node accepted (and did not drop) that fusion_node neither received
    nor counted as dropped before its first /clock (dropped.no_clock_yet: on sim time the
    player's first IMU sample can beat its first /clock, on one host as on two)."""
    diag = seen['diagnostics']
    fusion = diag['fusion_node: fusion']
    loss = {}
    for sensor in ('camera', 'lidar', 'radar', 'imu'):
        ingest = diag[f'{sensor}_ingest: {sensor} ingest']
        counted = int(fusion[f'received.{sensor}']) + int(fusion.get(f'dropped.no_clock_yet.{sensor}', 0))
        loss[sensor] = int(ingest['accepted']) - int(ingest['dropped.queue_full']) - counted
    return loss


# Messages per stream in the 12 s pedestrian_intrusion bag.
STREAM_MESSAGES = {'camera': 360, 'lidar': 120, 'radar': 240, 'imu': 2400}


def next_to_nothing(loss: dict[str, int]) -> bool:
    """What a link that keeps losing packets may cost: a reliable KEEP_LAST writer repairs a
    sample only while the sample is still in its history (sensors/* 10 deep, the IMU 100:
    >= 0.33 s), and a repair whose NACK or resend is lost again waits another heartbeat
    (0.25 s) behind the camera's repairs. Runs of these tests lost nothing, 1 camera frame
    (clean-clone CI 2026-12-05) or 2 IMU samples (2026-12-07). The node set owes little
    loss, counted, and streams that recover: at most 0.5 % of a stream, at least 1 message."""
    return all(0 <= n <= max(1, int(STREAM_MESSAGES[s] * 0.005)) for s, n in loss.items())


def p99(values):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(0.99 * len(values)))], 2) if values else None


def test_the_node_set_split_across_hosts_gives_the_single_host_events(lan, scenario_bags, procs, tmp_path):
    """The same bag through the node set on one compute host and split between a sensor box
    and a compute box (the ingest nodes' validated 640x480 images, LiDAR sweeps, radar and
    IMU crossing the LAN with the shipped QoS): the station receives the same events and
    summaries, and nothing the sensor box accepted is lost on the way."""
    bag = scenario_bags('pedestrian_intrusion', 12)
    single = run_across_hosts(procs, tmp_path, bag, {'compute': 'all'}, 'single')
    split = run_across_hosts(procs, tmp_path, bag, {'sensors': 'sensors', 'compute': 'compute'}, 'split')
    report = {label: {'events': event_kinds(s), 'summaries': len(s['summaries']), 'sets': len(s['latency_ms']),
                      'partial': s['partial'], 'latency_p99_ms': p99(s['latency_ms']), 'loss': sensor_loss(s),
                      'cpu_s': s['cpu_s'], 'sent_mb': s['sent_mb']} for label, s in (('single', single), ('split', split))}
    print(json.dumps(report))
    assert 'zone_intrusion' in report['single']['events'], report
    # The scene's events are the same. The host's own (a deadline overrun, a stream starved
    # for 0.3 s) come from load on these 2 cores, which both runs share: the one-host run
    # raised them on 3 of about 10 runs (sessions 33 and 34), twice with none in the split
    # run. Splitting must not add any.
    host_kinds = {'deadline_overrun', 'sensor_dropout'}
    scene = {label: {k: n for k, n in r['events'].items() if k not in host_kinds} for label, r in report.items()}
    assert scene['split'] == scene['single'], report
    assert all(report['split']['events'].get(k, 0) <= report['single']['events'].get(k, 0) for k in host_kinds), report
    assert 1 <= report['split']['summaries'] <= report['single']['summaries'], report
    assert report['split']['loss'] == {'camera': 0, 'lidar': 0, 'radar': 0, 'imu': 0}, report
    # Sets past their hard deadline are not published; the one-host run shed up to 5 under
    # the same load (session 34: 116 against 121).
    assert abs(report['split']['sets'] - report['single']['sets']) <= 6, report
    # The sensor box's streams crossed the LAN once: 360 images of 0.92 MB and 120 sweeps
    # are ~380 MB (it was 794 MB when each participant had two UDP transports).
    assert 330 < report['split']['sent_mb']['sensors'] < 480, report
    assert report['single']['sent_mb']['compute'] < 40, report


def test_a_camera_on_a_100_mbit_link_sends_jpeg_and_the_compute_box_decodes_it(lan, scenario_bags, procs, tmp_path):
    """The slow-link layout (docs/deployment.md): the sensor box only has the drivers, here a
    bag whose camera is JPEG on `camera/image_raw/compressed` (written by Pillow, as
    image_transport's compressed plugin records it), and its link is capped at 100 Mbit/s,
    below the raw camera's ~220 Mbit/s. The compute box runs the whole node set with
    `camera_transport:=compressed`: camera_ingest decodes every frame, nothing is lost on the
    link, and the station gets the scene's events."""
    from bagmaker import compress_camera

    bag = tmp_path / 'pedestrian_intrusion_jpeg'
    counts = compress_camera(scenario_bags('pedestrian_intrusion', 12), bag)
    frames = counts['/camera/image_raw/compressed']
    netlan.limit_rate('sensors', 100)
    try:
        seen = run_across_hosts(procs, tmp_path, bag, {'compute': 'all'}, 'jpeg_100mbit', player_host='sensors',
                                launch_args=('camera_transport:=compressed',))
    finally:
        netlan.limit_rate('sensors', None)
    camera = seen['diagnostics']['camera_ingest: camera ingest']
    report = {'frames': frames, 'events': event_kinds(seen), 'summaries': len(seen['summaries']),
              'sets': len(seen['latency_ms']), 'partial': seen['partial'], 'latency_p99_ms': p99(seen['latency_ms']),
              'loss': sensor_loss(seen), 'sent_mb': seen['sent_mb'], 'cpu_s': seen['cpu_s'],
              'camera_ingest': {k: v for k, v in camera.items() if k.startswith(('received', 'accepted', 'rejected', 'latency', 'compressed'))}}
    print(json.dumps({'jpeg_100mbit': report}))
    # The JPEGs crossed the capped link and every one received was decoded. The driver input
    # is best effort (sensor-data QoS, 5 deep, as ROS drivers publish): a frame the link's
    # queue or a stalled reader drops is not repaired. All 360 arrived in most runs; a
    # clean-clone CI run under the suite's load (2026-12-07) got 359. At most 1 may be missing.
    assert frames - 1 <= int(camera['received']) == int(camera['accepted']) <= frames, report
    assert report['loss'] == {'camera': 0, 'lidar': 0, 'radar': 0, 'imu': 0}, report
    assert {'zone_intrusion', 'collision_risk'} <= set(report['events']), report
    assert report['summaries'] >= 1 and report['sets'] >= 100, report
    # JPEG is inside what the detector trained on (its monitoring reference includes the
    # JPEG-like augmentation): no model_degraded. It fired when the reference was the renders.
    assert 'model_degraded' not in report['events'], report
    # The raw camera alone would be 0.92 MB a frame (221 Mbit/s); JPEG and the raw LiDAR
    # together were 61 MB in 12 s (fusion_sim's flat shading makes 18 kB JPEGs; a real
    # camera's are ~200 kB, ~50 Mbit/s: scripts/bench_transport.py).
    assert report['sent_mb']['sensors'] < 0.5 * frames * 0.92, report


def lossy_run(lan, scenario_bags, procs, tmp_path, tuned: bool):
    """The split node set with 1 % of the packets between the sensor box and the compute box
    lost, each way, for the first 6 s of the bag (this kernel has no netem: nftables drops
    them; no delay is added); the hosts' kernels as shipped (`tuned`) or as Linux comes."""
    bag = scenario_bags('pedestrian_intrusion', 12)
    for host in ('sensors', 'compute'):
        lose_packets(host, 1)
        netlan.set_sysctl(TUNING if tuned else LINUX_DEFAULTS, host)
    dropped = {}

    def clean_the_link_after_6_s():
        time.sleep(1.0 + 6.0)  # the player's --delay, then 6 s of the bag
        for host in ('sensors', 'compute'):
            dropped[host] = lost_packets(host)
            assert sh('ip', 'netns', 'exec', SPLIT_HOSTS[host][0], 'nft', 'delete', 'table', 'netdev', 'sf_loss').returncode == 0

    label = 'tuned' if tuned else 'untuned'
    seen = run_across_hosts(procs, tmp_path, bag, {'sensors': 'sensors', 'compute': 'compute'}, label,
                            while_playing=clean_the_link_after_6_s)
    fusion = seen['diagnostics']['fusion_node: fusion']
    report = {'dropped_packets': dropped, 'events': event_kinds(seen), 'summaries': len(seen['summaries']),
              'sets': len(seen['latency_ms']), 'partial': seen['partial'], 'latency_p99_ms': p99(seen['latency_ms']),
              'loss': sensor_loss(seen), 'sent_mb': seen['sent_mb'],
              'dropout_sensors': sorted({s for e in seen['events'] if e['kind'] == 'sensor_dropout' for s in e['sensors']}),
              'dropout_events': [{'rule': e['rule'], 'sensors': e['sensors']} for e in seen['events'] if e['kind'] == 'sensor_dropout'],
              'fusion_node': {k: v for k, v in fusion.items() if k.startswith(('received.', 'stream.', 'sets'))}}
    print(json.dumps({f'lossy_{label}': report}))
    return report, fusion


def test_a_lossy_link_with_the_shipped_kernel_settings_loses_next_to_nothing(lan, scenario_bags, procs, tmp_path):
    """With config/sysctl-sensor_fusion.conf on both boxes, reliable QoS repairs the lost
    fragments: next to nothing the sensor box accepted is lost (`next_to_nothing`; unlike
    Linux's defaults, under which whole streams stop) and the events of a clean link are
    there. Repairs come a heartbeat apart, so LiDAR and IMU arrive in clumps while the link
    is lossy: each such stream is one reported outage (sensor_dropout, then stream_recovered
    once steady), not an event pair per clump, and some sets go out partial or are shed."""
    report, fusion = lossy_run(lan, scenario_bags, procs, tmp_path, tuned=True)
    assert sum(report['dropped_packets'].values()) > 500, report  # the link did lose packets
    assert next_to_nothing(report['loss']), report
    assert {'zone_intrusion', 'collision_risk'} <= set(report['events']), report
    for sensor in report['dropout_sensors']:
        rules = [e['rule'] for e in report['dropout_events'] if e['sensors'] == [sensor]]
        assert rules[::2] == ['stream_silent'] * len(rules[::2]) and rules[1::2] == ['stream_recovered'] * len(rules[1::2]), report
        # Back at the end, and at most one outage per 1.2 s of the 6 s lossy window (a
        # dropout needs 0.2 s of silence, a recovery 1 s of steady delivery): 1-3 seen,
        # against ~60 event pairs per sensor before dropout_recovery_s.
        assert 2 <= len(rules) <= 10, (sensor, rules)
    assert report['sets'] >= 100 and report['partial'] <= 30, report
    assert all(fusion[f'stream.{s}'] == 'receiving' for s in ('camera', 'lidar', 'radar', 'imu')), report


def delayed_run(scenario_bags, procs, tmp_path, loss_percent: float):
    """The split node set with the sensor box's link 5 ms late each way and `loss_percent` of
    its frames lost, for the whole bag, the shipped kernel settings on both boxes."""
    bag = scenario_bags('pedestrian_intrusion', 12)
    for host in ('sensors', 'compute'):
        netlan.set_sysctl(TUNING, host)
    label = f'delay5ms_loss{loss_percent:g}'
    with netlan.delay_link('sensors', 5, loss_percent) as link:
        seen = run_across_hosts(procs, tmp_path, bag, {'sensors': 'sensors', 'compute': 'compute'}, label)
    fusion = seen['diagnostics']['fusion_node: fusion']
    latency = sorted(seen['latency_ms'])
    report = {'link': link.counts, 'events': event_kinds(seen), 'summaries': len(seen['summaries']),
              'sets': len(latency), 'partial': seen['partial'],
              'latency_p50_ms': latency[len(latency) // 2] if latency else None, 'latency_p99_ms': p99(latency),
              'loss': sensor_loss(seen), 'sent_mb': seen['sent_mb'], 'cpu_s': seen['cpu_s'],
              'dropout_events': sum(e['kind'] == 'sensor_dropout' for e in seen['events']),
              'fusion_node': {k: v for k, v in fusion.items() if k.startswith(('received.', 'stream.', 'sets'))}}
    print(json.dumps({label: report}))
    return report, fusion


def test_a_link_5_ms_late_and_losing_1_percent_delays_the_sets_and_loses_next_to_nothing(lan, scenario_bags, procs, tmp_path):
    """What the issue's `netem delay 5ms loss 1%` asks, on a kernel without netem: the sensor
    box's link is a relay that holds every frame 5 ms each way (tests/netdelay.py), first
    without loss, then losing 1 % of the frames for the whole bag. Delay alone costs the sets
    a few ms and nothing else. With loss, reliable QoS repairs every lost fragment a NACK or a
    heartbeat later: next to nothing the sensor box accepted is lost (`next_to_nothing`: a
    writer repairs only what its history still holds) and the scene's events come, but
    the repairs make streams arrive in clumps, and the node set says so: sets shed to hold the
    deadline and counted, partial sets flagged, each outage a sensor_dropout, and every
    stream delivering again at the end (none stuck)."""
    delayed, _ = delayed_run(scenario_bags, procs, tmp_path, 0)
    assert delayed['loss'] == {'camera': 0, 'lidar': 0, 'radar': 0, 'imu': 0}, delayed
    assert {'zone_intrusion', 'collision_risk'} <= set(delayed['events']), delayed
    assert delayed['sets'] >= 100 and delayed['link']['lost'] == delayed['link']['overflow'] == 0, delayed

    lossy, fusion = delayed_run(scenario_bags, procs, tmp_path, 1)
    assert lossy['link']['lost'] > 1000 and lossy['link']['overflow'] == 0, lossy  # the link did lose frames
    assert next_to_nothing(lossy['loss']), lossy
    assert {'zone_intrusion', 'collision_risk'} <= set(lossy['events']), lossy
    # Degraded, and reported: every set released was published or counted as shed.
    assert int(fusion['sets.released']) == int(fusion['sets.published']) + int(fusion['sets.shed']), fusion
    assert lossy['sets'] >= 60, lossy
    assert all(fusion[f'stream.{s}'] in ('receiving', 'recovering') for s in ('camera', 'lidar', 'radar', 'imu')), lossy


def test_a_lossy_link_with_linux_defaults_stops_the_large_streams_and_says_so(lan, scenario_bags, procs, tmp_path):
    """The same link with Linux's default reassembly pool (4 MB, 30 s): a 0.92 MB image is
    ~660 IP fragments, one lost fragment loses its 64 KB datagram, and the incomplete ones
    fill the pool, so the camera and LiDAR streams stop and stay stopped after the link is
    clean, while radar and IMU (a packet per message) get through. What the node set must do
    is say so: sensor_dropout naming both sensors, partial sets, the streams reported silent."""
    report, fusion = lossy_run(lan, scenario_bags, procs, tmp_path, tuned=False)
    assert {'camera', 'lidar'} & set(report['dropout_sensors']), report
    assert report['partial'] >= 30, report
    # Radar and IMU get through. A clean-clone CI run (2026-12-05) lost 2 of 2400 IMU samples
    # here (radar 0): both small streams stalled for ~0.2 s at 3.6 s, while the camera's
    # fragments filled the reassembly pool. Both writers keep the last 0.5 s (IMU 100 at
    # 200 Hz, radar 10 at 20 Hz), so a reader that does not acknowledge for longer loses a
    # few. The bound is 0.5 % of each stream, not zero, and each stream recovers.
    assert 0 <= report['loss']['radar'] <= 1 and 0 <= report['loss']['imu'] <= 12, report
    assert fusion['stream.radar'] == fusion['stream.imu'] == 'receiving', report
    assert report['sets'] >= 100, report  # the sets go on, partial

"""fusion_launch over real processes and DDS: the installed package (`make install`) is
found through AMENT_PREFIX_PATH as `ros2 launch` finds it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, binary, child_env, thread_stacks
from test_bad_input import imu

PREFIX = Path(os.environ.get('SF_INSTALL_PREFIX', ROOT / 'install'))
INGEST = ['camera_ingest', 'lidar_ingest', 'radar_ingest', 'imu_ingest']


def launcher() -> str:
    exe = PREFIX / 'bin' / 'fusion_launch'
    if not exe.exists():
        pytest.fail(f'{exe} missing: run `make install` first')
    return str(exe)


def launch_env(**kw):
    env = child_env(**kw)
    if str(PREFIX) not in env.get('AMENT_PREFIX_PATH', '').split(':'):
        env['AMENT_PREFIX_PATH'] = f"{PREFIX}:{env.get('AMENT_PREFIX_PATH', '')}"
    return env


def declared_graph(namespace: str, remaps: dict[str, str]):
    """The README's topic table (generated from nodes/src/graph.rs), resolved in `namespace`:
    {node: {'pub': {topic: type}, 'sub': {...}, 'srv': {...}}}, and {topic: QoS text}."""
    text = (ROOT / 'README.md').read_text()
    table = text[text.index('<!-- graph:begin -->'):text.index('<!-- graph:end -->')]
    nodes: dict[str, dict[str, dict[str, str]]] = {}
    qos: dict[str, str] = {}

    def resolve(name: str) -> str:
        name = remaps.get(name, name)
        return name if name.startswith('/') else f'{namespace}/{name}'

    for row in table.splitlines()[3:]:
        cells = [c.strip() for c in row.strip('|').split('|')]
        name, ty, q, publishers, subscribers = cells[:5]
        service = name.endswith('(service)')
        name = resolve(name.split('`')[1])
        ty = ty.strip('`')
        every = [*INGEST, 'fusion_node', 'summarizer']
        pubs = every if publishers == 'every node' else re.findall(r'`(\w+)`', publishers)
        subs = re.findall(r'`(\w+)`', subscribers)
        if 'only with' in cells[5]:
            continue  # published only when a parameter asks for it
        for n in pubs:
            nodes.setdefault(n, {'pub': {}, 'sub': {}, 'srv': {}})['srv' if service else 'pub'][name] = ty
        for n in subs:
            nodes.setdefault(n, {'pub': {}, 'sub': {}, 'srv': {}})['sub'][name] = ty
        if not service:
            qos[name] = q
    return nodes, qos


def launched_graph(node, names, namespace: str):
    """What the running nodes show over DDS, without ROS's own endpoints."""
    infra = ('/rosout', '/parameter_events', '/clock')
    graph = {}
    for n in names:
        def own(pairs):
            return {t: types[0] for t, types in pairs if t not in infra and not re.search(r'/(describe|get|list|set)_parameters|/get_parameter_types|/set_parameters_atomically|/get_type_description$', t)}
        graph[n] = {'pub': own(node.get_publisher_names_and_types_by_node(n, namespace)),
                    'sub': own(node.get_subscriber_names_and_types_by_node(n, namespace)),
                    'srv': own(node.get_service_names_and_types_by_node(n, namespace))}
    return graph


def qos_text(info) -> str:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    q = info.qos_profile
    text = 'reliable' if q.reliability == ReliabilityPolicy.RELIABLE else 'best effort'
    if q.durability == DurabilityPolicy.TRANSIENT_LOCAL:
        text += ', transient local'
    return text


@pytest.mark.fast
def test_install_layout_file_by_file():
    nodes = INGEST + ['fusion_node', 'summarizer']
    tools = ['fusion_bag', 'fusion_launch', 'fusion_replay', 'fusion_sim', 'fusion_view']
    files = [f'lib/sensor_fusion/{e}' for e in nodes] + [f'bin/{e}' for e in tools] + [
        'share/sensor_fusion/package.xml',
        'share/sensor_fusion/launch/fusion.launch.xml',
        'share/sensor_fusion/config/ingest.yaml',
        'share/sensor_fusion/config/calibration.yaml',
        'share/sensor_fusion/config/fastdds.xml',
        'share/sensor_fusion/config/fusion.rviz',
        'share/sensor_fusion/config/sysctl-sensor_fusion.conf',
        'share/ament_index/resource_index/packages/sensor_fusion',
        'local_setup.bash',
    ]
    for f in files:
        assert (PREFIX / f).is_file(), f
    for f in files[:len(nodes) + len(tools)]:
        assert os.access(PREFIX / f, os.X_OK), f
    # What `ros2 run sensor_fusion <TAB>` offers is the node set, not the tools or benchmarks.
    assert sorted(p.name for p in (PREFIX / 'lib/sensor_fusion').iterdir()) == sorted(nodes)
    pkg = (PREFIX / 'share/sensor_fusion/package.xml').read_text()
    for dep in ['sensor_msgs', 'geometry_msgs', 'std_msgs', 'visualization_msgs', 'diagnostic_msgs', 'fusion_msgs',
                'rosgraph_msgs']:
        assert f'<depend>{dep}</depend>' in pkg, dep
    # local_setup.bash puts the prefix on AMENT_PREFIX_PATH (once, however often sourced).
    out = subprocess.run(['bash', '-c', f'source {PREFIX}/local_setup.bash; source {PREFIX}/local_setup.bash; '
                          'echo $AMENT_PREFIX_PATH'], capture_output=True, text=True, env=child_env()).stdout
    assert out.split(':').count(str(PREFIX)) == 1, out


@pytest.mark.fast
@pytest.mark.parametrize('path', sorted((ROOT / 'launch').glob('*.launch.xml')), ids=lambda p: p.name)
def test_every_launch_file_parses(path):
    # sensor.launch.xml is included once per sensor: it has required arguments.
    args = ['sensor:=front_bumper_lidar', 'kind:=lidar', 'input_topic:=/front/points'] if path.name == 'sensor.launch.xml' else []
    res = subprocess.run([launcher(), '--print', str(path), *args], capture_output=True, text=True, env=launch_env(),
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count('--ros-args') >= 1
    if args:
        # One lidar_ingest, named after the sensor, told which sensor it serves, fed the driver's topic.
        [line] = res.stdout.splitlines()
        assert line.startswith('front_bumper_lidar_ingest-1: ') and '/lib/sensor_fusion/lidar_ingest ' in line, line
        assert '-r __node:=front_bumper_lidar_ingest' in line and '-r lidar/points:=/front/points' in line, line
        params = [Path(p).read_text() for p in re.findall(r'--params-file (\S+)', line)]
        assert any('sensor: front_bumper_lidar' in p for p in params), params


@pytest.mark.fast
@pytest.mark.parametrize('args, detector, llm', [([], 'flex', 'flex'), (['backend:=wgpu'], 'wgpu', 'wgpu'),
                                                 (['detector_backend:=wgpu'], 'wgpu', 'flex'),
                                                 (['backend:=wgpu', 'llm_backend:=flex'], 'wgpu', 'flex')])
def test_each_model_gets_its_own_backend(args, detector, llm, tmp_path):
    """`backend` places both models; `detector_backend` / `llm_backend` place one each (the
    parameter files the launcher hands fusion_node and the summarizer)."""
    import yaml

    res = subprocess.run([launcher(), '--print', 'sensor_fusion', 'fusion.launch.xml', *args], capture_output=True,
                         text=True, env=launch_env(ROS_LOG_DIR=str(tmp_path)), timeout=30)
    assert res.returncode == 0, res.stderr
    backend = {}
    for line in res.stdout.splitlines():
        label, cmd = line.split(': ', 1)
        name = label.rsplit('-', 1)[0]
        for path in re.findall(r'--params-file (\S+)', cmd):
            # A later params file overrides an earlier one, as in ROS.
            for params in yaml.safe_load(Path(path).read_text()).values():
                if 'backend' in params.get('ros__parameters', {}):
                    backend[name] = params['ros__parameters']['backend']
    assert (backend['fusion_node'], backend['summarizer']) == (detector, llm), backend
    bad = subprocess.run([launcher(), '--print', 'sensor_fusion', 'fusion.launch.xml', 'llm_backend:=tpu'],
                         capture_output=True, text=True, env=launch_env(ROS_LOG_DIR=str(tmp_path)), timeout=30)
    assert bad.returncode == 1 and 'tpu' in bad.stderr, bad.stderr


@pytest.mark.fast
@pytest.mark.parametrize('role, nodes', [('all', INGEST + ['fusion_node', 'summarizer']), ('sensors', INGEST),
                                         ('compute', ['fusion_node', 'summarizer'])])
def test_role_splits_the_node_set_between_a_sensor_box_and_a_compute_box(role, nodes, tmp_path):
    """role:=sensors starts the four ingest nodes, role:=compute fusion_node and the
    summarizer; together they are the whole set (issue 21). Any other role is refused."""
    res = subprocess.run([launcher(), '--print', 'sensor_fusion', 'fusion.launch.xml', f'role:={role}'], capture_output=True,
                         text=True, env=launch_env(ROS_LOG_DIR=str(tmp_path)), timeout=30)
    assert res.returncode == 0, res.stderr
    assert [line.split(': ', 1)[0].rsplit('-', 1)[0] for line in res.stdout.splitlines()] == nodes, res.stdout
    bad = subprocess.run([launcher(), '--print', 'sensor_fusion', 'fusion.launch.xml', 'role:=station'],
                         capture_output=True, text=True, env=launch_env(ROS_LOG_DIR=str(tmp_path)), timeout=30)
    assert bad.returncode == 1 and 'station' in bad.stderr, bad.stderr


@pytest.mark.fast
def test_rviz_starts_only_when_asked_with_the_shipped_view(tmp_path):
    """`rviz:=true` adds rviz2 with the installed fusion.rviz; by default no rviz2 is needed.
    rviz2 is not installed on this machine, so asking for it is one clear error."""
    import yaml

    env = launch_env(ROS_LOG_DIR=str(tmp_path))
    plain = subprocess.run([launcher(), '--print', 'sensor_fusion', 'fusion.launch.xml'], capture_output=True,
                           text=True, env=env, timeout=30)
    assert plain.returncode == 0 and 'rviz2' not in plain.stdout, plain.stderr
    asked = subprocess.run([launcher(), '--print', 'sensor_fusion', 'fusion.launch.xml', 'rviz:=true'],
                           capture_output=True, text=True, env=env, timeout=30)
    view = PREFIX / 'share/sensor_fusion/config/fusion.rviz'
    if asked.returncode == 0:
        assert f'-d {view}' in asked.stdout, asked.stdout
    else:
        assert 'rviz2' in asked.stderr, asked.stderr
    config = yaml.safe_load(view.read_text())
    manager = config['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == 'base_link'
    topics = {d['Class'].split('/')[-1]: d.get('Topic', {}).get('Value') for d in manager['Displays']}
    shown = {d.get('Topic', {}).get('Value') for d in manager['Displays']}
    assert {'/fusion/markers', '/fusion/camera_boxes', '/sensors/lidar', '/sensors/radar', '/sensors/camera'} <= shown, shown
    assert 'TF' in topics and 'Image' in topics, topics


def started_pids(proc) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'\] (\S+)-\d+: process started with pid \[(\d+)\]', proc.output())}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped) is not running.
    try:
        return Path(f'/proc/{pid}/stat').read_text().split()[2] != 'Z'
    except FileNotFoundError:
        return False


@pytest.mark.fast
def test_launched_graph_params_respawn_and_clean_sigint(procs, ros, tmp_path):
    from rcl_interfaces.srv import GetParameters

    proc = procs([launcher(), 'sensor_fusion', 'fusion.launch.xml', 'namespace:=robot1', 'use_sim_time:=true',
                  'lidar_topic:=/velodyne_points', '--grace', '3'], name='fusion_launch', env=launch_env())
    probe = ros()
    want = {(n, '/robot1') for n in [*INGEST, 'fusion_node', 'summarizer']}
    probe.wait_for(lambda: want <= set(probe.node.get_node_names_and_namespaces()), 30,
                   f'nodes {want} in the ROS graph; output:\n{proc.output()}')

    # The graph over DDS is the declared one (README's table, generated from graph.rs): every
    # node's publishers, subscriptions and services, resolved in the namespace, the LiDAR
    # input moved by its launch argument; and each publisher offers the declared QoS.
    expected, expected_qos = declared_graph('/robot1', {'lidar/points': '/velodyne_points'})
    names = [*INGEST, 'fusion_node', 'summarizer']
    try:
        probe.wait_for(lambda: launched_graph(probe.node, names, '/robot1') == expected, 60, 'the declared graph')
    except AssertionError:
        assert launched_graph(probe.node, names, '/robot1') == expected, proc.output()
    for topic, q in expected_qos.items():
        offered = probe.node.get_publishers_info_by_topic(topic)
        for info in offered:
            if info.node_namespace == '/robot1' and info.node_name in names:
                assert q.rsplit(', depth', 1)[0] == qos_text(info), (topic, info.node_name, q, qos_text(info))
                assert f'depth {info.qos_profile.depth}' in q or info.qos_profile.depth == 0, (topic, q, info.qos_profile)

    # Parameters: from the YAML file (ingest.yaml), from <param> tags (calibration,
    # use_sim_time from the launch argument), read back through the parameter services.
    client = probe.node.create_client(GetParameters, '/robot1/lidar_ingest/get_parameters')
    assert client.wait_for_service(timeout_sec=20)
    fut = client.call_async(GetParameters.Request(names=['max_range', 'queue_size', 'calibration', 'use_sim_time',
                                                         'tf_wait']))
    probe.wait_for(fut.done, 10, 'get_parameters')
    v = fut.result().values
    assert v[0].double_value == 120.0 and v[1].integer_value == 4
    assert v[2].string_value == str(PREFIX / 'share/sensor_fusion/config/calibration.yaml')
    assert v[3].bool_value is True
    assert v[4].double_value == 1.0  # the launch argument tf_wait's default

    # Killing a respawn="true" node brings it back (a new process, same node in the graph).
    pids = started_pids(proc)
    assert set(INGEST) <= set(pids), proc.output()
    os.kill(pids['imu_ingest'], signal.SIGKILL)
    probe.wait_for(lambda: len(re.findall(r'imu_ingest-\d+: process started', proc.output())) == 2, 20,
                   f'imu_ingest respawned; output:\n{proc.output()}')
    new_pid = [int(p) for p in re.findall(r'imu_ingest-\d+: process started with pid \[(\d+)\]', proc.output())][-1]
    assert new_pid != pids['imu_ingest'] and alive(new_pid)
    probe.wait_for(lambda: ('imu_ingest', '/robot1') in probe.node.get_node_names_and_namespaces(), 20, 'respawned node')

    # SIGINT: every node stops, fusion_launch exits 0, no child is left.
    all_pids = [int(p) for p in re.findall(r'process started with pid \[(\d+)\]', proc.output())]
    proc.p.send_signal(signal.SIGINT)
    assert proc.p.wait(30) == 0, proc.output()
    time.sleep(0.2)
    assert not [p for p in all_pids if alive(p)], proc.output()


@pytest.mark.fast
def test_remaps_and_custom_launch_file(procs, ros, tmp_path):
    from sensor_msgs.msg import Imu

    f = tmp_path / 'remap.launch.xml'
    f.write_text("""<launch>
  <arg name="suffix" default="a"/>
  <include file="$(find-pkg-share sensor_fusion)/launch/fusion.launch.xml" if="false"/>
  <node pkg="sensor_fusion" exec="imu_ingest" name="imu_$(var suffix)" output="screen">
    <param from="$(find-pkg-share sensor_fusion)/config/ingest.yaml"/>
    <param name="diagnostics_period" value="$(eval 0.5 * 2)"/>
    <remap from="/imu/data" to="/test/imu_in"/>
    <remap from="/sensors/imu" to="/test/imu_out"/>
  </node>
</launch>
""")
    proc = procs([launcher(), str(f), 'suffix:=remapped'], name='fusion_launch', env=launch_env())
    probe = ros()
    probe.subscribe('/test/imu_out', Imu)
    pub = probe.publisher('/test/imu_in', Imu)
    probe.wait_matched(pub, timeout=30)
    probe.wait_publishers('/test/imu_out', timeout=30)
    probe.wait_for(lambda: ('imu_remapped', '/') in probe.node.get_node_names_and_namespaces(), 20, 'node imu_remapped')
    probe.publish_until_through(pub, imu, '/test/imu_out')
    assert '[imu_remapped-1]' in proc.output()  # output="screen" lines carry the node's name


MALFORMED = {
    'unknown_tag': ('<launch>\n  <nod pkg="sensor_fusion" exec="imu_ingest"/>\n</launch>\n', 2, 'unknown tag <nod>'),
    'unknown_attribute': ('<launch>\n\n  <node pkg="sensor_fusion" exec="imu_ingest" nmae="x"/>\n</launch>\n', 3,
                          "unknown attribute 'nmae'"),
    'missing_required_arg': ('<launch>\n  <arg name="robot" description="robot id"/>\n</launch>\n', 2,
                             "required argument 'robot' not provided"),
    'unknown_substitution': ('<launch>\n  <let name="a" value="$(find-pkg sensor_fusion)"/>\n</launch>\n', 2,
                             'unknown substitution $(find-pkg)'),
    'undefined_var': ('<launch>\n  <node pkg="sensor_fusion" exec="imu_ingest" name="$(var who)"/>\n</launch>\n', 2,
                      "unknown launch argument or variable 'who'"),
    'unclosed_substitution': ('<launch>\n  <let name="a" value="$(env HOME"/>\n</launch>\n', 2, "missing ')'"),
    'bad_xml': ('<launch>\n  <node pkg="sensor_fusion" exec="imu_ingest">\n</launch>\n', 3, 'not well-formed XML'),
    'bad_choice': ('<launch>\n  <arg name="b" default="cuda"><choice value="flex"/></arg>\n</launch>\n', 2, 'not one of'),
    'bad_condition': ('<launch>\n  <node pkg="sensor_fusion" exec="imu_ingest" if="yes"/>\n</launch>\n', 2,
                      'expected true/false/1/0'),
    'unknown_executable': ('<launch>\n  <node pkg="sensor_fusion" exec="imu_ingestt"/>\n</launch>\n', 2,
                           "executable 'imu_ingestt' not found"),
    'missing_params_file': ('<launch>\n  <node pkg="sensor_fusion" exec="imu_ingest">\n    <param from="/nope.yaml"/>\n'
                            '  </node>\n</launch>\n', 3, 'parameter file /nope.yaml does not exist'),
}


@pytest.mark.fast
@pytest.mark.parametrize('kind', list(MALFORMED))
def test_malformed_launch_file_gives_file_line_error_and_starts_nothing(kind, tmp_path):
    text, line, msg = MALFORMED[kind]
    f = tmp_path / f'{kind}.launch.xml'
    f.write_text(text)
    res = subprocess.run([launcher(), str(f)], capture_output=True, text=True, env=launch_env(), timeout=30)
    assert res.returncode != 0
    assert res.stderr.startswith(f'{f}:{line}: '), res.stderr
    assert msg in res.stderr, res.stderr
    assert 'process started' not in res.stderr + res.stdout


@pytest.mark.fast
def test_exit_status_reports_a_failed_node(tmp_path):
    f = tmp_path / 'fails.launch.xml'
    f.write_text("""<launch>
  <node pkg="sensor_fusion" exec="imu_ingest" name="broken">
    <param name="calibration" value="/no/such/calibration.yaml"/>
  </node>
</launch>
""")
    res = subprocess.run([launcher(), str(f)], capture_output=True, text=True, env=launch_env(), timeout=60)
    assert res.returncode == 1, res.stderr
    assert 'broken-1: process has died' in res.stderr


def thread_policies(pid: int) -> dict[str, set[int]]:
    """The scheduling policies (0 normal, 1 FIFO, 2 RR, 5 idle) of a process's threads, by
    thread name (as the kernel keeps it: 15 characters)."""
    policies: dict[str, set[int]] = {}
    for task in Path(f'/proc/{pid}/task').iterdir():
        try:
            stat = (task / 'stat').read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
        name = stat[stat.index('(') + 1:stat.rindex(')')]
        # Fields after the name start at field 3 (state); the policy is field 41.
        policies.setdefault(name, set()).add(int(stat[stat.rindex(')') + 2:].split()[38]))
    return policies


def assert_kernels_leave_the_cores_to_others(pid: int):
    """fusion_node at real-time priority (root): only the scheduler's own threads are
    real-time; the detector's kernel pool (one thread per core) runs on normal scheduling,
    so a long inference cannot take every core from the ingest nodes and the drivers."""
    policies = thread_policies(pid)
    realtime = {name for name, p in policies.items() if p & {1, 2}}
    assert realtime or os.geteuid() != 0, f'root runs fusion_node real-time: {policies}'
    assert all(n in ('fusion-sched', 'fusion-inferenc') or n.startswith('fusion-cpu-') for n in realtime), policies
    assert policies.get('fusion-compute-') == {0}, policies


def test_each_node_killed_with_sigkill_is_back_within_3_s_while_the_rest_keeps_publishing(scenario_bags, procs, ros):
    """Faults under load: the launched graph plays a bag (in a loop, sim time); each node in
    turn is killed with SIGKILL. The launcher respawns it within 0.8 s and its output flows
    again within 3 s of the kill, while the other ingest streams never pause."""
    from diagnostic_msgs.msg import DiagnosticArray
    from fusion_msgs.msg import FusedObjectArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, Imu, PointCloud2

    from rosgraph_msgs.msg import Clock

    BAG_SECONDS = 12
    bag = scenario_bags('pedestrian_intrusion', BAG_SECONDS)
    # Shared memory left by processes that earlier tests killed (the check at the end counts
    # what this test's kills leave).
    subprocess.run(['fastdds', 'shm', 'clean'], capture_output=True, timeout=30, check=True)
    probe = ros()
    arrivals: dict[str, list[float]] = {}
    outputs = {'camera_ingest': ('/sensors/camera', Image), 'lidar_ingest': ('/sensors/lidar', PointCloud2),
               'radar_ingest': ('/sensors/radar', PointCloud2), 'imu_ingest': ('/sensors/imu', Imu),
               'fusion_node': ('/fusion/objects', FusedObjectArray), 'summarizer': ('/diagnostics', DiagnosticArray)}

    def arrived(topic, only=None):
        def cb(m):
            if only is None or only(m):
                arrivals[topic].append(time.monotonic())
        return cb

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    # What the bag player delivered to each ingest node, so that a pause of the player (one
    # process sending every stream) is told apart from a pause of the node set. In session 26
    # the three other ingest outputs paused together for ~2.0 s after radar_ingest's kill in one
    # CI run and 1 of 6 local runs; whether their input paused too was not recorded then.
    inputs = {'camera_ingest': ('/camera/image_raw', Image), 'lidar_ingest': ('/lidar/points', PointCloud2),
              'radar_ingest': ('/radar/points', PointCloud2), 'imu_ingest': ('/imu/data', Imu)}
    for name, (topic, kind) in inputs.items():
        arrivals[f'input:{topic}'] = []
        probe.node.create_subscription(kind, topic, arrived(f'input:{topic}'), qos, raw=True)
    for name, (topic, kind) in outputs.items():
        key = f'{name}:{topic}'
        arrivals[key] = []
        only = (lambda m: any(s.hardware_id == 'summarizer' for s in m.status)) if name == 'summarizer' else None
        # Only arrival times matter: the sensor streams are taken serialized (raw), so the
        # probe does not spend a core deserializing 30 VGA images a second in Python, which on
        # 2 cores delayed its own callbacks by seconds and looked like a paused stream.
        diag = kind is DiagnosticArray
        probe.node.create_subscription(kind, topic, arrived(key, only), 50 if diag else qos, raw=not diag)
    # /clock from the first message on (the player's first is the bag's start).
    sim_time = []
    probe.node.create_subscription(Clock, '/clock', lambda m: sim_time.append(m.clock.sec + m.clock.nanosec * 1e-9), 10)
    launch = procs([launcher(), 'sensor_fusion', 'fusion.launch.xml', 'use_sim_time:=true', '--grace', '3'],
                   name='fusion_launch', env=launch_env())
    probe.wait_publishers('/fusion/objects', timeout=40)
    probe.wait_publishers('/sensors/lidar', timeout=40)
    procs([binary('fusion_bag'), 'play', str(bag), '--clock', '200', '--loop', '--wait-for-subscribers', '--delay', '1'],
          name='play')
    keys = {name: f'{name}:{topic}' for name, (topic, _) in outputs.items()}
    probe.wait_for(lambda: all(len(arrivals[k]) >= 3 for k in keys.values()), 40,
                   f'every node publishing; {[(k, len(v)) for k, v in arrivals.items()]}\n{launch.output()[-3000:]}')

    # Each kill is made where the bag will not loop within its recovery window: a loop
    # restart is a fault of its own (data time goes back, every stream resyncs and fusion
    # starts over: test_fusion.py's loop test), and one landing inside a recovery window added
    # up to ~2 s to it on this 2-core machine.
    bag_start = min(sim_time)

    def node_pid(name):
        return int(re.findall(rf'\] {name}-\d+: process started with pid \[(\d+)\]', launch.output())[-1])
    assert_kernels_leave_the_cores_to_others(node_pid('fusion_node'))

    def far_from_a_loop_restart():
        t = sim_time[-1] - bag_start
        return 1.5 <= t <= BAG_SECONDS - 4.5

    recovery, respawned_after, gaps, input_gaps = {}, {}, {}, {}
    for name in outputs:
        probe.wait_for(far_from_a_loop_restart, 20, f'a kill window; sim time {sim_time[-1] - bag_start:.1f} s into the bag')
        starts = re.findall(rf'\] {name}-\d+: process started with pid \[(\d+)\]', launch.output())
        pid = int(starts[-1])
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        probe.wait_for(lambda: len(re.findall(rf'\] {name}-\d+: process started', launch.output())) > len(starts), 10,
                       f'{name} respawned\n{launch.output()[-3000:]}')
        t_started = time.monotonic()
        try:
            probe.wait_for(lambda: any(t > t_started for t in arrivals[keys[name]]), 10,
                           f'{name} publishing again\n{launch.output()[-3000:]}')
        except AssertionError as e:
            # Where the respawned node is stuck: in one CI run (stop 37) a respawned fusion_node
            # logged nothing at all for 10 s, not even its tf wait, which ends within 1 s.
            raise AssertionError(f'{e}\n{thread_stacks(node_pid(name))}') from None
        t_back = min(t for t in arrivals[keys[name]] if t > t_started)
        recovery[name] = round(t_back - t_kill, 2)
        if name == 'fusion_node':
            assert_kernels_leave_the_cores_to_others(node_pid(name))
        respawned_after[name] = round(t_started - t_kill, 2)
        # The other ingest streams never paused while this node was away, nor in the seconds
        # after (nominal 10-200 Hz; the bag's loop restart costs LiDAR 0.5 s at ingest). The
        # window runs to 3.5 s after the kill, not only until the node is back: a writer whose
        # dead reader still holds its shared-memory buffers stalls ~1 s after the kill, and a
        # fast recovery used to hide that (config/fastdds.xml: port_queue_capacity).
        t_end = max(t_back, t_kill + 3.5)
        time.sleep(max(0.0, t_end - time.monotonic()) + 0.2)
        def longest_gap(times):
            seen = [t_kill] + [t for t in times if t_kill < t < t_end] + [t_end]
            return round(max(b - a for a, b in zip(seen, seen[1:])), 2)
        for other in ('camera_ingest', 'lidar_ingest', 'radar_ingest', 'imu_ingest'):
            if other == name:
                continue
            gaps[f'{other} ({name} killed)'] = longest_gap(arrivals[keys[other]])
            input_gaps[f'{other} ({name} killed)'] = longest_gap(arrivals[f'input:{inputs[other][0]}'])
        # Paused: a node that stopped publishing while its input kept coming.
        paused = {k: g for k, g in gaps.items() if g >= 1.2 and g > input_gaps[k] + 0.5}
        assert not paused, f'paused after a kill: {paused}; every gap so far (s): {gaps}; input gaps: {input_gaps}'
    print(f'recovery after SIGKILL (s): {recovery}; process restarted after (s): {respawned_after}')
    print(f'longest pause of each other ingest stream (s): {gaps}; of its input from the player: {input_gaps}')
    # The launcher restarts a node 0.5 s after it died. Its output then waits for DDS to match
    # the new process with its peers: with Fast DDS's default 3 s announcement period that
    # took 1.5-8.3 s from the kill on 2 busy cores; config/fastdds.xml announces every 0.5 s,
    # and it takes 1.6-2.5 s (12 kills, session 13), 1.2-2.6 s (30 kills, an AMD EPYC).
    # With reliable writers' default 3 s heartbeat, one CI run saw 4.55 s (1.5 + 3): the
    # profile's 0.25 s heartbeat gave 1.2-2.7 s over 30 kills. A 0.2 s respawn_delay was
    # worse, 1.1-7.6 s over 30 kills: a process that reuses the dead one's ports before its
    # peers have dropped it is matched late.
    # The restart is timed from the kill to this test reading the launcher's "process started"
    # line, so it includes the probe's polling on loaded cores: 0.54-0.62 s, and once 0.92 s,
    # in one CI run (session 34), against the 0.5 s respawn_delay.
    assert all(r <= 1.2 for r in respawned_after.values()), respawned_after
    assert max(recovery.values()) <= 3.0, recovery
    assert launch.alive()
    # Each killed node left its Fast DDS shared-memory segment (up to 64 MiB of RAM); the
    # launcher removed them before each respawn, so Fast DDS's own tool finds none left.
    assert 'shared-memory segment(s) left by dead processes' in launch.output(), launch.output()[-3000:]
    leftover = subprocess.run(['fastdds', 'shm', 'clean'], capture_output=True, text=True, timeout=30, check=True)
    assert '0 zombie segments cleaned' in leftover.stdout, leftover.stdout

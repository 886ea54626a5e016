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
from conftest import ROOT, binary, child_env
from test_bad_input import imu

PREFIX = Path(os.environ.get('SF_INSTALL_PREFIX', ROOT / 'install'))
INGEST = ['camera_ingest', 'lidar_ingest', 'radar_ingest', 'imu_ingest']


def launcher() -> str:
    exe = PREFIX / 'lib' / 'sensor_fusion' / 'fusion_launch'
    if not exe.exists():
        pytest.fail(f'{exe} missing: run `make install` first')
    return str(exe)


def launch_env(**kw):
    env = child_env(**kw)
    if str(PREFIX) not in env.get('AMENT_PREFIX_PATH', '').split(':'):
        env['AMENT_PREFIX_PATH'] = f"{PREFIX}:{env.get('AMENT_PREFIX_PATH', '')}"
    return env


def test_install_layout_file_by_file():
    files = [f'lib/sensor_fusion/{e}' for e in INGEST + ['fusion_bag', 'fusion_launch']] + [
        'share/sensor_fusion/package.xml',
        'share/sensor_fusion/launch/fusion.launch.xml',
        'share/sensor_fusion/config/ingest.yaml',
        'share/sensor_fusion/config/calibration.yaml',
        'share/sensor_fusion/config/fastdds.xml',
        'share/ament_index/resource_index/packages/sensor_fusion',
        'local_setup.bash',
    ]
    for f in files:
        assert (PREFIX / f).is_file(), f
    for e in INGEST + ['fusion_bag', 'fusion_launch']:
        assert os.access(PREFIX / 'lib/sensor_fusion' / e, os.X_OK), e
    pkg = (PREFIX / 'share/sensor_fusion/package.xml').read_text()
    for dep in ['sensor_msgs', 'geometry_msgs', 'std_msgs', 'visualization_msgs', 'diagnostic_msgs', 'fusion_msgs',
                'rosgraph_msgs']:
        assert f'<depend>{dep}</depend>' in pkg, dep
    # local_setup.bash puts the prefix on AMENT_PREFIX_PATH (once, however often sourced).
    out = subprocess.run(['bash', '-c', f'source {PREFIX}/local_setup.bash; source {PREFIX}/local_setup.bash; '
                          'echo $AMENT_PREFIX_PATH'], capture_output=True, text=True, env=child_env()).stdout
    assert out.split(':').count(str(PREFIX)) == 1, out


@pytest.mark.parametrize('path', sorted((ROOT / 'launch').glob('*.launch.xml')), ids=lambda p: p.name)
def test_every_launch_file_parses(path):
    res = subprocess.run([launcher(), '--print', str(path)], capture_output=True, text=True, env=launch_env(), timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count('--ros-args') >= 1


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


def test_launched_graph_params_respawn_and_clean_sigint(procs, ros, tmp_path):
    from rcl_interfaces.srv import GetParameters

    proc = procs([launcher(), 'sensor_fusion', 'fusion.launch.xml', 'namespace:=robot1', 'use_sim_time:=true',
                  '--grace', '3'], name='fusion_launch', env=launch_env())
    probe = ros()
    want = {(n, '/robot1') for n in [*INGEST, 'fusion_node', 'summarizer']}
    probe.wait_for(lambda: want <= set(probe.node.get_node_names_and_namespaces()), 30,
                   f'nodes {want} in the ROS graph; output:\n{proc.output()}')

    # Parameters: from the YAML file (ingest.yaml), from <param> tags (calibration,
    # use_sim_time from the launch argument), read back through the parameter services.
    client = probe.node.create_client(GetParameters, '/robot1/lidar_ingest/get_parameters')
    assert client.wait_for_service(timeout_sec=20)
    fut = client.call_async(GetParameters.Request(names=['max_range', 'queue_size', 'calibration', 'use_sim_time']))
    probe.wait_for(fut.done, 10, 'get_parameters')
    v = fut.result().values
    assert v[0].double_value == 120.0 and v[1].integer_value == 4
    assert v[2].string_value == str(PREFIX / 'share/sensor_fusion/config/calibration.yaml')
    assert v[3].bool_value is True

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

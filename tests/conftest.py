"""Shared fixtures of the end-to-end tests: real ROS 2 (rclpy + our r2r binaries over
Fast DDS), real rosbag2 bags written and read by the independent `rosbags` package.

Run through `make test` (which sources scripts/ros-env.sh). Every test session gets its
own ROS_DOMAIN_ID and localhost-only discovery, so parallel runs do not cross-talk.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / 'target' / 'release'
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ['ROS_DOMAIN_ID'] = os.environ.get('SF_TEST_DOMAIN_ID', str(random.randint(100, 199)))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'


def binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f'{path} is missing: run `make build` first')
    return str(path)


def child_env(**overrides) -> dict[str, str]:
    """Our binaries must run with no LD_* variables (rpath from build.rs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('LD_')}
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def simulate(out, scenario, seed=1, duration=10.0, *extra, timeout=300, env=None):
    """A fusion_sim scenario bag at `out` (which must not exist); returns `out`. `env`: overrides."""
    res = subprocess.run([binary('fusion_sim'), '--scenario', scenario, '--seed', str(seed), '--duration', str(duration),
                          '--out', str(out), *extra], capture_output=True, text=True, env=child_env(**(env or {})),
                         timeout=timeout)
    assert res.returncode == 0, res.stderr
    return out


# The seed of the scenario bags the end-to-end tests play (used by no other test, never for
# tuning).
SCENARIO_SEED = 23


@pytest.fixture(scope='session')
def scenario_bags(tmp_path_factory):
    """fusion_sim scenario bags, made once per test session: `scenario_bags(name, seconds)`."""
    root = tmp_path_factory.mktemp('scenarios')
    cache = {}

    def get(name, duration, seed=SCENARIO_SEED):
        key = (name, duration, seed)
        if key not in cache:
            cache[key] = simulate(root / f'{name}_{seed}_{duration}', name, seed, duration, timeout=900)
        return cache[key]
    return get


class Proc:
    """A child process with its output captured to a file."""

    def __init__(self, args, log: Path, env=None):
        self.args = args
        self.log = log
        self._f = open(log, 'wb')
        self.p = subprocess.Popen(args, stdout=self._f, stderr=subprocess.STDOUT, env=env or child_env(),
                                  start_new_session=True)

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, sig=signal.SIGINT, timeout=15.0) -> int:
        # 15 s: longer than fusion_launch's own SIGINT -> SIGTERM -> SIGKILL escalation (2 x 5 s
        # by default), so a launcher is not killed before its nodes. They run in process groups
        # of their own; a launcher's death sends them SIGTERM, which a node already shutting
        # down does not act on (one was left spinning in its DDS teardown for 33 min).
        if self.alive():
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self._f.close()
        return self.p.returncode

    def output(self) -> str:
        if not self._f.closed:
            self._f.flush()
        return self.log.read_text(errors='replace')


@pytest.fixture(autouse=True)
def ros_home(tmp_path, monkeypatch):
    """A ROS_HOME of each test's own: what a node keeps there (the summarizer's journal of
    pending events, speech files, rcl logs) never carries over into another test."""
    home = tmp_path / 'ros_home'
    home.mkdir(exist_ok=True)
    monkeypatch.setenv('ROS_HOME', str(home))
    return home


@pytest.fixture
def procs(tmp_path):
    started: list[Proc] = []

    def start(args, name=None, env=None) -> Proc:
        p = Proc(args, tmp_path / f'{name or Path(args[0]).name}.{len(started)}.log', env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


class RosProbe:
    """An rclpy node spinning on a background thread: the real Python client."""

    def __init__(self, name: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        # A context (DDS participant) of its own per probe: a participant created after
        # another one in the same process was destroyed did not always receive data.
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.rclpy = rclpy
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.messages: dict[str, list] = {}
        self.subscriptions: dict[str, object] = {}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self._stop:
            self.executor.spin_once(timeout_sec=0.05)

    def subscribe(self, topic: str, msg_type, qos=None):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        with self.lock:
            self.messages.setdefault(topic, [])

        def cb(m, topic=topic):
            with self.lock:
                self.messages[topic].append(m)

        self.subscriptions[topic] = self.node.create_subscription(msg_type, topic, cb, qos)

    def publisher(self, topic: str, msg_type, qos=None):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        return self.node.create_publisher(msg_type, topic, qos or QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.messages.get(topic, []))

    def get(self, topic: str) -> list:
        with self.lock:
            return list(self.messages.get(topic, []))

    def wait_for(self, predicate, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}')

    def wait_subscribers(self, topic: str, n: int = 1, timeout: float = 20.0):
        self.wait_for(lambda: self.node.count_subscribers(topic) >= n, timeout, f'{n} subscriber(s) on {topic}')

    def wait_publishers(self, topic: str, n: int = 1, timeout: float = 20.0):
        """Until our subscription on `topic` is matched with n publishers (or, without a
        subscription of ours, until the graph shows them)."""
        sub = self.subscriptions.get(topic)
        if sub is not None:
            self.wait_for(lambda: sub.get_publisher_count() >= n, timeout, f'{n} matched publisher(s) on {topic}')
        else:
            self.wait_for(lambda: self.node.count_publishers(topic) >= n, timeout, f'{n} publisher(s) on {topic}')

    def wait_matched(self, publisher, n: int = 1, timeout: float = 20.0):
        """Until `publisher` is matched with n subscriptions (the graph can show a
        subscriber before DDS matched it with this writer; a message sent in between is
        lost for a volatile reader)."""
        self.wait_for(lambda: publisher.get_subscription_count() >= n, timeout,
                      f'{n} matched subscription(s) on {publisher.topic_name}')

    def publish_until_through(self, pub, make, out_topic: str, stamp: int = 10, timeout: float = 20.0) -> int:
        """Publishes make(stamp) with increasing stamps until something arrives on
        `out_topic`; returns the last stamp used. A best-effort reader drops data from a
        writer it has not matched yet, and only the writer's side of a match is observable."""
        last = [stamp]

        def through():
            last[0] += 1
            pub.publish(make(last[0]))
            time.sleep(0.2)
            return self.count(out_topic) > 0

        self.wait_for(through, timeout, f'first message through to {out_topic}')
        return last[0]

    def close(self):
        self._stop = True
        self.thread.join()
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


def thread_stacks(pid: int) -> str:
    """Every thread's stack and kernel wait state of a live process, for a failure message:
    where a node that stopped answering is stuck (gdb attaches for a moment and detaches)."""
    try:
        state = Path(f'/proc/{pid}/status').read_text().splitlines()[:3]
        waits = {t.name: (Path(f'/proc/{pid}/task/{t.name}/comm').read_text().strip(),
                          Path(f'/proc/{pid}/task/{t.name}/wchan').read_text().strip())
                 for t in Path(f'/proc/{pid}/task').iterdir()}
    except OSError as e:
        return f'process {pid}: {e}'
    try:
        bt = subprocess.run(['gdb', '-p', str(pid), '-batch', '-nx', '-ex', 'thread apply all bt 25'],
                            capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        bt = f'gdb: {e}'
    return f'process {pid}: {state}\nthreads (comm, wchan): {waits}\n{bt}'


@pytest.fixture
def ros():
    probes: list[RosProbe] = []

    def make(name='sf_test_probe') -> RosProbe:
        p = RosProbe(f'{name}_{len(probes)}')
        probes.append(p)
        return p

    yield make
    for p in probes:
        p.close()


def diagnostics_values(probe: RosProbe, status_name: str) -> dict[str, str]:
    """The key/values of the newest DiagnosticStatus called `status_name`."""
    for arr in reversed(probe.get('/diagnostics')):
        for s in arr.status:
            if s.name == status_name:
                return {kv.key: kv.value for kv in s.values}
    return {}


@pytest.fixture(scope='session')
def nominal_bag(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """3 s of all raw streams at nominal rates, written by rosbags (MCAP)."""
    from bagmaker import write_bag

    path = tmp_path_factory.mktemp('bags') / 'nominal'
    counts = write_bag(path, duration=3.0, storage='mcap')
    return path, counts

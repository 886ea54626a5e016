"""Hosts on one LAN, made of network namespaces on this computer: a bridge in a namespace of
its own, and a veth from each host's namespace into it. Used by tests/test_deployment.py and
scripts/bench_transport.py. Only the addresses of these namespaces are ever targeted."""
from __future__ import annotations

import os
import subprocess

LAN = 'sf_lan'
# host: (namespace, link name prefix, address)
HOSTS = {'sensors': ('sf_sensors', 'sfs', '10.231.9.1'),
         'compute': ('sf_compute', 'sfc', '10.231.9.2'),
         'station': ('sf_station', 'sft', '10.231.9.3')}


class NoNamespaces(Exception):
    """This process may not make network namespaces (it needs CAP_NET_ADMIN)."""


def sh(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=30, **kw)


def remove_lan():
    for ns, _, _ in HOSTS.values():
        sh('ip', 'netns', 'del', ns)
    sh('ip', 'netns', 'del', LAN)


def make_lan():
    """Builds the LAN (removing a previous run's first)."""
    remove_lan()
    for cmd in (['ip', 'netns', 'add', LAN], ['ip', '-n', LAN, 'link', 'add', 'sfbr', 'type', 'bridge'],
                ['ip', '-n', LAN, 'link', 'set', 'sfbr', 'up']):
        res = sh(*cmd)
        if res.returncode != 0 and 'ermission' in res.stderr:
            raise NoNamespaces(res.stderr.strip())
        assert res.returncode == 0, (cmd, res.stderr)
    for ns, link, ip in HOSTS.values():
        for cmd in (['ip', 'netns', 'add', ns],
                    ['ip', '-n', LAN, 'link', 'add', f'{link}0', 'type', 'veth', 'peer', 'name', f'{link}1', 'netns', ns],
                    ['ip', '-n', LAN, 'link', 'set', f'{link}0', 'master', 'sfbr', 'up'],
                    ['ip', '-n', ns, 'addr', 'add', f'{ip}/24', 'dev', f'{link}1'],
                    ['ip', '-n', ns, 'link', 'set', f'{link}1', 'up'],
                    ['ip', '-n', ns, 'link', 'set', 'lo', 'up'],
                    ['ip', '-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', f'{link}1']):
            res = sh(*cmd)
            assert res.returncode == 0, (cmd, res.stderr)


def on_host(host: str, *args) -> list[str]:
    return ['ip', 'netns', 'exec', HOSTS[host][0], *args]


def peers_of(host: str) -> str:
    """ROS_STATIC_PEERS for a host: the other hosts."""
    return ';'.join(ip for name, (_, _, ip) in HOSTS.items() if name != host)


def profile_env(host: str, env: dict | None = None) -> dict:
    """`env` (default: this process's) in the multi-host profile: LOCALHOST discovery plus
    the other hosts as static peers."""
    env = dict(os.environ if env is None else env)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_STATIC_PEERS=peers_of(host))
    return env


def link_bytes(host: str) -> dict[str, int]:
    """Bytes a host has sent and received on its LAN link."""
    import json
    ns, link, _ = HOSTS[host]
    stats = json.loads(sh('ip', '-n', ns, '-j', '-s', 'link', 'show', 'dev', f'{link}1').stdout)[0]['stats64']
    return {'tx': stats['tx']['bytes'], 'rx': stats['rx']['bytes']}


SHIPPED_SYSCTL = os.path.join(os.path.dirname(__file__), '..', 'config', 'sysctl-sensor_fusion.conf')


def shipped_sysctl() -> list[tuple[str, str]]:
    """(key, value) of the package's kernel settings for hosts that exchange large messages."""
    out = []
    for line in open(SHIPPED_SYSCTL).read().splitlines():
        if line.strip() and not line.startswith('#'):
            key, value = line.split('=', 1)
            out.append((key.strip(), value.strip()))
    return out


def set_sysctl(settings, host: str | None = None) -> dict[str, str]:
    """Writes `settings` ({key: value} or pairs) in a host's namespace, or on this machine
    (host None: net.core.* are not per namespace); returns the values they replaced."""
    prefix = on_host(host) if host else []
    before = {}
    for key, value in dict(settings).items():
        before[key] = sh(*prefix, 'sysctl', '-n', key).stdout.strip()
        res = sh(*prefix, 'sysctl', '-w', f'{key}={value}')
        assert res.returncode == 0, (key, res.stderr)
    return before


def limit_rate(host: str, mbit: int | None):
    """Caps what `host` sends on its LAN link at `mbit` Mbit/s (HTB; None takes the cap off).
    This kernel has no netem, so a slow link is a rate cap, without added delay."""
    ns, link, _ = HOSTS[host]
    sh('ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', f'{link}1', 'root')
    if mbit:
        for cmd in (['tc', 'qdisc', 'add', 'dev', f'{link}1', 'root', 'handle', '1:', 'htb', 'default', '10'],
                    ['tc', 'class', 'add', 'dev', f'{link}1', 'parent', '1:', 'classid', '1:10', 'htb',
                     'rate', f'{mbit}mbit', 'ceil', f'{mbit}mbit']):
            res = sh('ip', 'netns', 'exec', ns, *cmd)
            assert res.returncode == 0, (cmd, res.stderr)


class delay_link:
    """`with delay_link(host, ms, loss_percent) as link:` the host's LAN link delays every
    frame `ms` each way and loses `loss_percent` % of them (tests/netdelay.py, a relay between
    two TAP devices: this kernel has no netem). On exit the veth is back and `link.counts`
    holds the relay's counts."""

    def __init__(self, host: str, ms: float, loss_percent: float = 0.0):
        self.host, self.ms, self.loss = host, ms, loss_percent
        self.counts: dict = {}

    def __enter__(self):
        import select
        import sys
        import time
        self.proc = subprocess.Popen([sys.executable, '-u', os.path.join(os.path.dirname(__file__), 'netdelay.py'),
                                      self.host, str(self.ms), str(self.loss)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = select.select([self.proc.stdout], [], [], 30)[0]
        line = self.proc.stdout.readline().strip() if ready else ''
        if line != 'ready':
            # The relay may have removed the veth already: the host gets it back either way.
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            restore_link(self.host)
            raise AssertionError(f'netdelay did not start: {line!r} {err[-2000:]}')
        time.sleep(0.5)  # the bridge port forwards once it is up
        return self

    def __exit__(self, *exc):
        import json
        try:
            self.proc.terminate()
            try:
                out, err = self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate(timeout=30)
            lines = [line for line in out.splitlines() if line.startswith('{')]
            self.counts = json.loads(lines[-1]) if lines else {'error': err[-2000:]}
        finally:
            restore_link(self.host)
        return False


def restore_link(host: str):
    """The host's veth into the bridge, as make_lan makes it (after delay_link's TAPs)."""
    ns, link, ip = HOSTS[host]
    sh('ip', '-n', LAN, 'link', 'del', f'{link}0')
    sh('ip', '-n', ns, 'link', 'del', f'{link}1')  # a TAP left in the host, if any
    for cmd in (['ip', '-n', LAN, 'link', 'add', f'{link}0', 'type', 'veth', 'peer', 'name', f'{link}1', 'netns', ns],
                ['ip', '-n', LAN, 'link', 'set', f'{link}0', 'master', 'sfbr', 'up'],
                ['ip', '-n', ns, 'addr', 'add', f'{ip}/24', 'dev', f'{link}1'],
                ['ip', '-n', ns, 'link', 'set', f'{link}1', 'up'],
                ['ip', '-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', f'{link}1']):
        res = sh(*cmd)
        assert res.returncode == 0, (cmd, res.stderr)

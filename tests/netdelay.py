"""A host's LAN link with delay and loss, for a kernel without netem (this machine's:
CONFIG_NET_SCH_NETEM and sch_fq are not set, so neither netem nor an eBPF departure time can
hold packets back). The host's veth is replaced by two TAP devices, one in the host's namespace
and one on the bridge, and this process carries every Ethernet frame between them, each way,
`delay` ms late, dropping each with probability `loss` % on its own draw (as netem's loss).

    python tests/netdelay.py HOST DELAY_MS LOSS_PERCENT

Prints `ready` once the link is up; on SIGTERM or SIGINT prints one JSON line of counts and
exits, and the TAP devices (and the link) go with it: `netlan.delay_link` puts the veth back.
Frames are read in batches and stamped with the batch's time, so a frame waits `delay` from
when the relay saw it (within a millisecond of when it was sent: the relay sleeps until the
next frame is due or one arrives).
"""
from __future__ import annotations

import collections
import fcntl
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import netlan  # noqa: E402

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name: str) -> int:
    fd = os.open('/dev/net/tun', os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def run(*cmd: str):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise SystemExit(f'netdelay: {" ".join(cmd)}: {res.stderr.strip()}')


def main():
    host, delay_ms, loss_percent = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    ns, link, ip = netlan.HOSTS[host]
    # The veth goes (deleting one end deletes both); two TAPs take its names and places.
    subprocess.run(['ip', '-n', netlan.LAN, 'link', 'del', f'{link}0'], capture_output=True, timeout=30)
    bridge_side, host_side = open_tap('sfdly0'), open_tap('sfdly1')
    run('ip', 'link', 'set', 'sfdly0', 'netns', netlan.LAN)
    run('ip', '-n', netlan.LAN, 'link', 'set', 'sfdly0', 'name', f'{link}0')
    run('ip', '-n', netlan.LAN, 'link', 'set', f'{link}0', 'master', 'sfbr', 'txqueuelen', '10000', 'up')
    run('ip', 'link', 'set', 'sfdly1', 'netns', ns)
    run('ip', '-n', ns, 'link', 'set', 'sfdly1', 'name', f'{link}1')
    run('ip', '-n', ns, 'addr', 'add', f'{ip}/24', 'dev', f'{link}1')
    # A TAP queues what its host sends until the relay reads it: room for a burst of
    # fragmented images, as a NIC's ring would have.
    run('ip', '-n', ns, 'link', 'set', f'{link}1', 'txqueuelen', '10000', 'up')
    run('ip', '-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', f'{link}1')

    delay = delay_ms / 1000.0
    other = {bridge_side: host_side, host_side: bridge_side}
    waiting = {host_side: collections.deque(), bridge_side: collections.deque()}  # by where they go
    counts = {'to_host': 0, 'from_host': 0, 'lost': 0, 'overflow': 0, 'max_waiting': 0, 'max_late_ms': 0.0}
    rng = random.Random(1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    poller = select.epoll()
    for fd in other:
        poller.register(fd, select.EPOLLIN)
    print('ready', flush=True)
    while not stop:
        now = time.monotonic()
        for out, queue in waiting.items():
            while queue and queue[0][0] <= now:
                due, frame = queue.popleft()
                counts['max_late_ms'] = max(counts['max_late_ms'], (now - due) * 1000)
                try:
                    os.write(out, frame)
                except (BlockingIOError, OSError):
                    counts['overflow'] += 1  # the receiving TAP's queue is full: lost, as on a wire
        next_due = min((q[0][0] for q in waiting.values() if q), default=now + 0.1)
        try:
            events = poller.poll(max(0.0, next_due - time.monotonic()))
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd, _ in events:
            while True:
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if rng.random() * 100 < loss_percent:
                    counts['lost'] += 1
                    continue
                counts['from_host' if fd == host_side else 'to_host'] += 1
                waiting[other[fd]].append((now + delay, frame))
        counts['max_waiting'] = max(counts['max_waiting'], sum(len(q) for q in waiting.values()))
    counts['max_late_ms'] = round(counts['max_late_ms'], 2)
    counts['cpu_s'] = round(time.process_time(), 2)  # what the relay took of the machine
    print(json.dumps(counts), flush=True)


if __name__ == '__main__':
    main()

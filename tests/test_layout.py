"""The crate layout holds: the ROS-free crates stay free of ROS, and the core does not carry
the simulator or its dependencies. Read with `cargo tree` (normal dependencies, as built)."""
import subprocess

import pytest
from conftest import ROOT

pytestmark = pytest.mark.fast


def dependencies(crate: str) -> set[str]:
    """The package names `crate` links, transitively (dev-dependencies excluded)."""
    out = subprocess.run(['cargo', 'tree', '-p', crate, '-e', 'normal', '--prefix', 'none',
                          '--format', '{p}'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {line.split(' ')[0] for line in out.splitlines() if line.strip()} - {crate}


@pytest.mark.parametrize('crate', ['fusion', 'sensor_sim', 'models'])
def test_the_ros_free_crates_link_no_ros(crate):
    ros = {d for d in dependencies(crate) if d.startswith(('r2r', 'rcl', 'rmw'))}
    assert not ros, f'{crate} links ROS crates: {sorted(ros)}'


def test_the_core_carries_neither_the_simulator_nor_its_random_numbers():
    core = dependencies('fusion')
    assert 'sensor_sim' not in core and not {d for d in core if d.startswith('rand')}, sorted(core)
    assert 'fusion' in dependencies('sensor_sim')
    # The node crate does link ROS, so the check above can see it.
    assert 'r2r' in dependencies('sensor_fusion')

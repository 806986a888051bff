"""A stateful fake of OpenStack (Keystone v3, Nova, Neutron, Glance) on 127.0.0.1 over HTTP.

Real openstacksdk, Packer and Ansible clients talk to it; tests steer it through the
Python hooks of `FakeOpenStack`. See docs/testing-openstack-fake.md.
"""

from tests.fakes.openstack.clouds import (
    APP_CRED_CLOUD,
    PASSWORD_CLOUD,
    OpenStackCloud,
    clouds_config,
    write_clouds_yaml,
)
from tests.fakes.openstack.server import FakeOpenStack
from tests.fakes.openstack.state import Credentials, Server

__all__ = [
    "APP_CRED_CLOUD",
    "PASSWORD_CLOUD",
    "Credentials",
    "FakeOpenStack",
    "OpenStackCloud",
    "Server",
    "clouds_config",
    "write_clouds_yaml",
]

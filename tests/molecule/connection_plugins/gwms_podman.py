"""Ansible connection `gwms_podman`: containers.podman.podman with pipelining.

The collection's plugin runs `podman exec` without `-i`, so it cannot feed a module on
stdin and declares no pipelining: every task then costs four `podman exec` calls (mkdir,
chmod, run, rm) instead of one. Molecule scenarios and the site-playbook test spend most
of their time in those calls, so this subclass attaches stdin when Ansible pipes a module
and turns pipelining on. Everything else (mount, put/fetch, options) is the collection's.
"""

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import (
    Connection as PodmanConnection,
)

DOCUMENTATION = """
    name: gwms_podman
    short_description: containers.podman.podman with pipelining (podman exec -i)
    description:
        - Runs commands in an existing podman container like containers.podman.podman,
          and passes pipelined module data on stdin, so each task is one podman exec.
    options:
      remote_addr:
        description: The ID or name of the container.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: User (name or UID) that runs commands inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments for the podman command line.
        default: ''
        ini:
          - section: defaults
            key: podman_extra_args
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description: The podman executable.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
      pipelining:
        description: Pipe modules to the interpreter's stdin instead of copying them.
        type: boolean
        default: true
        env:
          - name: ANSIBLE_PIPELINING
        ini:
          - section: defaults
            key: pipelining
          - section: connection
            key: pipelining
        vars:
          - name: ansible_pipelining
"""


class Connection(PodmanConnection):
    transport = "gwms_podman"
    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        # ConnectionBase.exec_command only logs; skip the parent's, which omits -i.
        super(PodmanConnection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        exec_args = ["exec"]
        if in_data is not None:
            exec_args.append("--interactive")
        if self.user:
            exec_args.extend(("--user", self.user))
        command = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        return self._podman(exec_args, command, in_data)

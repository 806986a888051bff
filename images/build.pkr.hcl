# One build: every source is provisioned by the same playbook, which branches on
# packer_builder_type in one place (like kubernetes-sigs/image-builder).

locals {
  playbook          = var.playbook_file != "" ? var.playbook_file : "${path.root}/../playbooks/image.yml"
  ansible_vars_args = flatten([for f in var.ansible_vars_files : ["--extra-vars", "@${f}"]])
}

build {
  sources = [
    "source.amazon-ebs.glidein",
    "source.openstack.glidein",
    "source.qemu.glidein",
  ]

  provisioner "ansible" {
    playbook_file = local.playbook
    command       = var.ansible_playbook
    user          = local.ssh_users[source.type]
    # Packer 1.6's SSH proxy breaks Ansible's connection; Ansible talks to the VM directly.
    use_proxy = false
    extra_arguments = concat(
      ["--extra-vars", "packer_builder_type=${source.type} gwms_image_os=${var.os_name}"],
      local.ansible_vars_args,
    )
    ansible_env_vars = [
      "ANSIBLE_HOST_KEY_CHECKING=False",
      "ANSIBLE_ROLES_PATH=${path.root}/../roles",
      "ANSIBLE_NOCOLOR=1",
      "ANSIBLE_RETRY_FILES_ENABLED=False",
      # One SSH round trip per task instead of three (no module copy): matters under TCG.
      "ANSIBLE_PIPELINING=True",
    ]
  }

  # Last: the build's login key must not ship in the image (clouds install the launching
  # user's key at boot from their metadata; the glidein needs no SSH login at all).
  provisioner "shell" {
    inline = ["rm -f \"$HOME/.ssh/authorized_keys\""]
  }
}

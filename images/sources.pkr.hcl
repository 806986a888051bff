# One source per cloud type; the build in build.pkr.hcl provisions all of them alike.

locals {
  stamp      = regex_replace(timestamp(), "[- TZ:]", "")
  image_name = "${var.image_name}-${var.os_name}-${local.stamp}"
  image_tags = {
    "gwms:image" = var.image_name
    "gwms:os"    = var.os_name
    "gwms:built" = local.stamp
  }
  ssh_users = {
    "amazon-ebs" = var.ec2_ssh_username != "" ? var.ec2_ssh_username : var.ssh_username
    "openstack"  = var.ssh_username
    "qemu"       = var.ssh_username
  }
  # Direct kernel boot only for a source disk that has no bootloader (the local qemu build).
  qemu_kernel_args = var.qemu_kernel == "" ? [] : [
    ["-kernel", var.qemu_kernel],
    ["-initrd", var.qemu_initrd],
    ["-append", var.qemu_append],
  ]
  # A cloud image's cloud-init reads the NoCloud seed (label cidata) that gives the build key
  # to its login user; gwms image build makes it (gwms/images/seed.py).
  qemu_seed_args = var.qemu_seed_iso == "" ? [] : [["-cdrom", var.qemu_seed_iso]]
}

source "amazon-ebs" "glidein" {
  region              = var.region
  custom_endpoint_ec2 = var.ec2_endpoint
  instance_type       = var.ec2_instance_type
  subnet_id           = var.ec2_subnet_id
  ami_name            = local.image_name
  tags                = local.image_tags
  ssh_username        = local.ssh_users["amazon-ebs"]
  ssh_timeout         = var.ssh_timeout

  source_ami_filter {
    filters = {
      name                  = var.ec2_source_ami_name
      architecture          = "x86_64"
      "virtualization-type" = "hvm"
      "root-device-type"    = "ebs"
    }
    owners      = [var.ec2_source_ami_owner]
    most_recent = true
  }

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = var.ec2_volume_size
    volume_type           = "gp3"
    throughput            = 125
    iops                  = 3000
    delete_on_termination = true
  }
}

source "openstack" "glidein" {
  cloud               = var.openstack_cloud
  region              = var.region
  source_image_name   = var.openstack_source_image
  flavor              = var.openstack_flavor
  networks            = var.openstack_networks
  floating_ip_network = var.openstack_floating_ip_network
  image_name          = local.image_name
  image_visibility    = var.openstack_image_visibility
  metadata            = local.image_tags
  ssh_username        = var.ssh_username
  ssh_timeout         = var.ssh_timeout
}

source "qemu" "glidein" {
  iso_url              = var.qemu_source
  iso_checksum         = var.qemu_source_checksum
  disk_image           = true
  use_backing_file     = false
  skip_resize_disk     = true
  format               = "qcow2"
  disk_interface       = "virtio"
  net_device           = "virtio-net"
  accelerator          = var.qemu_accelerator
  memory               = var.qemu_memory
  cpus                 = var.qemu_cpus
  headless             = true
  qemuargs             = concat(local.qemu_kernel_args, local.qemu_seed_args)
  boot_wait            = "1s"
  output_directory     = var.qemu_output_directory
  vm_name              = "${local.image_name}.qcow2"
  communicator         = "ssh"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = var.ssh_timeout
  shutdown_command     = "shutdown -P now"
  shutdown_timeout     = "5m"
}

# Debian 12 (bookworm): the official cloud images and their login users.
os_name                = "debian12"
ssh_username           = "debian"
ec2_ssh_username       = "admin"
ec2_source_ami_name    = "debian-12-amd64-*"
ec2_source_ami_owner   = "136693071363"
openstack_source_image = "debian-12-genericcloud-amd64"
qemu_source            = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
qemu_source_checksum   = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"

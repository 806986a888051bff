# Enterprise Linux 9 (AlmaLinux 9 images): the official cloud images and their login users.
os_name                = "el9"
ssh_username           = "almalinux"
ec2_ssh_username       = "ec2-user"
ec2_source_ami_name    = "AlmaLinux OS 9.* x86_64"
ec2_source_ami_owner   = "764336703387"
openstack_source_image = "AlmaLinux-9-GenericCloud-latest"
qemu_source            = "https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/AlmaLinux-9-GenericCloud-latest.x86_64.qcow2"
qemu_source_checksum   = "file:https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/CHECKSUM"

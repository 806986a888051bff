# Inputs of the glidein image build. The defaults here are the common layer; the var
# files in os/ and providers/ override them, then the operator's own var files, then -var.
# Works on Packer 1.6 (Debian's) and current Packer; see docs/images.md.

variable "image_name" {
  type        = string
  default     = "gwms-glidein"
  description = "Prefix of the image name; the OS name and a UTC timestamp follow."
}

variable "os_name" {
  type        = string
  default     = "debian12"
  description = "Short OS name, part of the image name and passed to Ansible as gwms_image_os."
}

variable "ssh_username" {
  type        = string
  default     = "debian"
  description = "User Packer and Ansible log in as on the build VM (the source image's user)."
}

variable "ec2_ssh_username" {
  type        = string
  default     = ""
  description = "Login user of the source AMI when it differs from ssh_username (Debian: admin)."
}

variable "region" {
  type        = string
  default     = ""
  description = "EC2 region or OpenStack region; empty for qemu (and for a one-region OpenStack)."
}

# --- Ansible (one playbook for every builder) ---

variable "playbook_file" {
  type        = string
  default     = ""
  description = "Playbook run on the build VM; empty means playbooks/image.yml of this repository."
}

variable "ansible_playbook" {
  type        = string
  default     = "ansible-playbook"
  description = "ansible-playbook command (a path, to use a virtualenv's)."
}

variable "ansible_vars_files" {
  type        = list(string)
  default     = []
  description = "YAML files of extra Ansible variables (hooks, *_install_packages), passed as -e @file."
}

# --- amazon-ebs ---

variable "ec2_instance_type" {
  type    = string
  default = "t3.small"
}

variable "ec2_source_ami_name" {
  type        = string
  default     = "debian-12-amd64-*"
  description = "Name filter of the source AMI; the newest match is used."
}

variable "ec2_source_ami_owner" {
  type        = string
  default     = "136693071363"
  description = "Account owning the source AMI (136693071363: Debian)."
}

variable "ec2_subnet_id" {
  type    = string
  default = ""
}

variable "ec2_endpoint" {
  type        = string
  default     = ""
  description = "EC2 API endpoint for EC2-compatible clouds (OpenNebula, Eucalyptus) or a test server."
}

variable "ec2_volume_size" {
  type        = number
  default     = 10
  description = "Root volume size in GiB."
}

# --- openstack ---

variable "openstack_cloud" {
  type        = string
  default     = ""
  description = "Cloud name in clouds.yaml (OS_CLIENT_CONFIG_FILE); empty uses OS_* variables."
}

variable "openstack_source_image" {
  type    = string
  default = "debian-12-genericcloud-amd64"
}

variable "openstack_flavor" {
  type    = string
  default = "m1.small"
}

variable "openstack_networks" {
  type        = list(string)
  default     = []
  description = "Network ids for the build VM; empty lets Nova choose."
}

variable "openstack_floating_ip_network" {
  type        = string
  default     = ""
  description = "External network to take a floating IP from when the build VM's network is private."
}

variable "openstack_image_visibility" {
  type    = string
  default = "private"
}

# --- qemu ---

variable "qemu_source" {
  type        = string
  default     = ""
  description = "Source disk (path or URL): a cloud image, or the disk made by scripts/make-source-disk.sh."
}

variable "qemu_source_checksum" {
  type        = string
  default     = "none"
  description = "Checksum of qemu_source as Packer takes it (sha256:HEX, file:PATH or none)."
}

variable "qemu_kernel" {
  type        = string
  default     = ""
  description = "Kernel for direct boot (a source disk without bootloader); empty boots the disk."
}

variable "qemu_initrd" {
  type    = string
  default = ""
}

variable "qemu_append" {
  type    = string
  default = "root=/dev/vda rw console=ttyS0"
}

variable "qemu_seed_iso" {
  type        = string
  default     = ""
  description = "NoCloud seed ISO (label cidata) with the build key, for a cloud image source; gwms image build makes it."
}

variable "qemu_accelerator" {
  type        = string
  default     = "kvm"
  description = "kvm, or tcg where /dev/kvm is missing (slow but works)."
}

variable "qemu_memory" {
  type    = number
  default = 1024
}

variable "qemu_cpus" {
  type    = number
  default = 2
}

variable "qemu_output_directory" {
  type        = string
  default     = "output-qemu"
  description = "Directory the qcow2 is written to; it must not exist (the wrapper chooses one per build)."
}

variable "ssh_private_key_file" {
  type        = string
  default     = ""
  description = "Key that logs in to the build VM (qemu); empty for clouds, where Packer makes one."
}

variable "ssh_timeout" {
  type    = string
  default = "20m"
}

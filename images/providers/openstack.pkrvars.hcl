# OpenStack: credentials come from clouds.yaml (OS_CLIENT_CONFIG_FILE), never from a var file.
openstack_cloud            = "openstack"
openstack_flavor           = "m1.small"
openstack_image_visibility = "private"

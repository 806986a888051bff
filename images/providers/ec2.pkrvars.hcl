# EC2 (and EC2-compatible clouds through ec2_endpoint). Credentials come from the
# environment or the instance profile, never from a var file.
region            = "us-east-1"
ec2_instance_type = "t3.small"
ec2_volume_size   = 10

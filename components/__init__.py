"""Pulumi ComponentResources (type tokens `halab:index:*`): they carry the plan of `halab/` to libvirt VMs."""

"""The VM lab: the Pulumi program's own resources realised on a local libvirt, without the engine.

`__main__.py` runs under Pulumi's mocks; a mock monitor (engine.py) creates every resource it
registers for real: libvirt networks, volumes, cloud-init disks and domains as
terraform-provider-libvirt v0.8.1 would define them (provider.py), remote Commands over SSH as
pulumi-command v1.2.1 runs them, the TLS key. libvirtd runs inside the lab's own namespaces
(hypervisor.py), so its bridge, NAT rules, taps and guests never touch the host's network.
"""

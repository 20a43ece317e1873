"""The drivers that run the core's step bundles on nodes: the namespace lab (netns/), the VM lab
(vmlab/), and what they and the command-line tools share (progress, host_packages, entry). The
Pulumi driver is components/, at the top, as Pulumi expects."""

"""ha-lb-lab: the layers are folders (docs/architecture.md): node, core, drivers, verify, bench."""

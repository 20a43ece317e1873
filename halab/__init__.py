"""ha-lb-lab below the Pulumi engine: stack config -> model -> rendered files and step bundles."""

"""The pure core: a stack config, validated into the model (config, model), the plan of steps
per node (plan, rolling) and every file rendered for them (render). No driver, no I/O beyond
reading the files of halab/node/."""

"""The node roles, one module each: a role declares its packages, its steps and the files each
places, by the node paths declared in halab/node/steps/paths.sh (halab/core/plan.py asks the
node's role, by `Node.role`; what a role module holds: plan.Role)."""

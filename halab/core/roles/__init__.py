"""The node roles, one module each: a role declares its packages, its node paths and its steps
(halab/core/plan.py asks the node's role, by `Node.role`)."""

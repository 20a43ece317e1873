"""The verifier: proves the lab's behaviour (VIP, real client addresses, balancing, failover,
health checks) through a transport that runs commands on the lab's hosts."""

"""Node paths both roles write."""

# systemd-networkd leaves the lab's policy rules and routes alone (read at its next start)
NETWORKD_CONF = "/etc/systemd/networkd.conf.d/90-halab.conf"

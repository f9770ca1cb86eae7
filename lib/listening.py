"""The kernel's table of listening TCP sockets (Linux), read cheaply and often.

Readiness uses it to fire a probe the moment its port enters LISTEN (lib/readiness.py);
port_holder uses the /proc form, which also gives socket inodes.
- netlink sock_diag (the interface `ss` uses): one request per address family returns only
  the LISTEN sockets; tens of microseconds, whatever the number of other sockets.
- /proc/net/tcp and tcp6: every socket of the namespace as text; slower (milliseconds on
  some kernels), used where netlink is refused.
ListenTable.ports() raises OSError when neither is available."""
import os
import socket
import struct

PROC_TABLES = ("net/tcp", "net/tcp6")
PROC_LISTEN = "0A"  # the socket state column in /proc/net/tcp
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST_DUMP = 0x301  # NLM_F_REQUEST | NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, then a 48-byte inet_diag_sockid
REQUEST = struct.Struct("=BBBBI48x")
SPORT_OFFSET = HEADER.size + 4  # inet_diag_msg: family, state, timer, retrans, then sport


def proc_listeners(proc="/proc"):
    """(port, socket inode) of every LISTEN socket in /proc's tcp tables; missing or
    unreadable tables are skipped."""
    for table in PROC_TABLES:
        try:
            with open(os.path.join(proc, table), encoding="ascii", errors="replace") as f:
                lines = f.readlines()[1:]  # after the header line
        except OSError:
            continue
        for line in lines:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            fields = line.split()
            if len(fields) > 9 and fields[3] == PROC_LISTEN:
                yield int(fields[1].rpartition(":")[2], 16), fields[9]


class ListenTable:
    """The set of TCP ports something listens on, by netlink where the kernel allows it,
    else from /proc. Not thread-safe: one reader thread owns it."""

    def __init__(self, proc="/proc", netlink=True):
        """`netlink=False` reads /proc only (to compare the two)."""
        self._proc = proc
        self._sequence = 0
        self._netlink = None
        try:
            if netlink:
                self._netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                                              NETLINK_SOCK_DIAG)
                self._netlink.settimeout(1.0)
                self._dump(socket.AF_INET)  # refused here rather than at the first real read
        except (OSError, AttributeError):  # no netlink (not Linux, sandbox, seccomp)
            self.close()
            self._netlink = None
        self.source = "netlink" if self._netlink else (
            "proc" if os.path.exists(os.path.join(proc, PROC_TABLES[0])) else None)

    def ports(self):
        """Ports in LISTEN now; OSError when the table cannot be read."""
        if self._netlink:
            return self._dump(socket.AF_INET) | self._dump(socket.AF_INET6)
        if self.source == "proc":
            return {port for port, _ in proc_listeners(self._proc)}
        raise OSError("no table of listening sockets on this system")

    def close(self):
        if self._netlink:
            self._netlink.close()

    def _dump(self, family):
        self._sequence += 1
        body = REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
        self._netlink.send(HEADER.pack(HEADER.size + len(body), SOCK_DIAG_BY_FAMILY,
                                       NLM_F_REQUEST_DUMP, self._sequence, 0) + body)
        ports = set()
        while True:
            data = self._netlink.recv(65536)
            offset = 0
            while offset + HEADER.size <= len(data):
                length, kind, _, sequence, _ = HEADER.unpack_from(data, offset)
                if length < HEADER.size:
                    raise OSError("malformed netlink answer")
                if sequence == self._sequence:  # skip what an earlier, failed read left
                    if kind == NLMSG_DONE:
                        return ports
                    if kind == NLMSG_ERROR:
                        raise OSError("sock_diag request refused")
                    ports.add(struct.unpack_from("!H", data, offset + SPORT_OFFSET)[0])
                offset += (length + 3) & ~3

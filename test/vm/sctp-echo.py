# A real SCTP client and server for test/vm/sctp.vmtest.ts (Node has no SCTP sockets); needs a kernel with
# SCTP (CONFIG_IP_SCTP). One-to-one style sockets (SOCK_STREAM, RFC 6458 3.1).
#   server NAME PORT...     answers each association's first message with "NAME PEER_ADDR:PEER_PORT MESSAGE"
#                           and closes once the client has shut down
#   client ADDR PORT MESSAGE TIMEOUT   sets up an association, sends, prints the answer, shuts down and
#                           prints "shutdown complete" once this namespace counted the graceful shutdown
import select
import socket
import sys
import time

IPPROTO_SCTP = 132


def server(name, ports):
    socks = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", int(port)))
        s.listen(16)
        socks.append(s)
    print("listening", flush=True)
    while True:
        ready, _, _ = select.select(socks, [], [])
        for s in ready:
            conn, peer = s.accept()
            conn.settimeout(30)
            try:
                msg = conn.recv(1024)
                conn.sendall(f"{name} {peer[0]}:{peer[1]} {msg.decode()}".encode())
                # The client's SHUTDOWN: recv returns no data; closing completes the shutdown.
                while conn.recv(1024):
                    pass
            except OSError as e:
                print("server error", e, flush=True)
            conn.close()


def shutdowns():
    """SctpShutdowns of this network namespace: associations that went from SHUTDOWN-SENT or
    SHUTDOWN-ACK-SENT to CLOSED, i.e. completed a graceful shutdown (RFC 3873 sctpShutdowns)."""
    with open("/proc/net/sctp/snmp") as f:
        for line in f:
            name, value = line.split()
            if name == "SctpShutdowns":
                return int(value)
    raise RuntimeError("no SctpShutdowns in /proc/net/sctp/snmp")


def client(addr, port, message, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    s.settimeout(float(timeout))
    s.connect((addr, int(port)))
    s.sendall(message.encode())
    print(s.recv(1024).decode(), flush=True)
    before = shutdowns()
    # SHUTDOWN; the server closes on seeing it; SHUTDOWN ACK and SHUTDOWN COMPLETE end the association.
    s.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + float(timeout)
    while shutdowns() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    if shutdowns() > before:
        print("shutdown complete", flush=True)
    s.close()


if sys.argv[1] == "server":
    server(sys.argv[2], sys.argv[3:])
else:
    client(*sys.argv[2:6])

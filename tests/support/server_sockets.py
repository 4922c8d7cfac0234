"""What the server's side of a test's TCP connections looks like, read from Linux's /proc.

Drain tests must know, not guess, that the server has *accepted* a connection (a connection
still in the listen backlog is established for the client but unknown to the server) and that
it has *read* what the client sent (bytes still in the kernel's receive queue are not yet in
the server's parser). ``/proc/net/tcp`` gives each server-side socket's unread byte count
(``rx_queue``) and inode; ``/proc/<pid>/fd`` says which process holds that inode, so which
worker took the connection. An accepted socket has an inode; one still in the backlog has 0.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerSide:
    """The server's end of one connection."""

    owner: int | None  # pid of the process holding it; None: not accepted yet
    unread: int  # bytes the client sent that the server has not read yet


ESTABLISHED = "01"  # /proc/net/tcp's state code


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def _tcp_sockets(server_port: int) -> dict[int, tuple[int, int]]:
    """Client port -> (inode, rx_queue) of every established server-side socket on ``server_port``."""
    found: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, queues, inode = fields[1], fields[2], fields[3], fields[4], fields[9]
        if _port(local) == server_port and state == ESTABLISHED:
            found[_port(remote)] = (int(inode), int(queues.split(":")[1], 16))
    return found


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (the supervisor and its workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # The command may contain spaces and parentheses: the fields follow the last ")".
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _socket_owners(pids: list[int]) -> dict[int, int]:
    """Socket inode -> pid, over the open files of ``pids``."""
    owners: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        owners[int(target[8:-1])] = pid
    return owners


def server_sides(server_port: int, root_pid: int, client_ports: list[int]) -> dict[int, ServerSide]:
    """Client port -> the server's side of that connection (absent: no longer established)."""
    sockets = _tcp_sockets(server_port)
    owners = _socket_owners(process_tree(root_pid))
    return {
        port: ServerSide(owners.get(sockets[port][0]), sockets[port][1])
        for port in client_ports
        if port in sockets
    }

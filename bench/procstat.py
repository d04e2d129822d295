"""Process-tree CPU and memory accounting from /proc (Linux only).

CPU time is utime+stime (fields 14 and 15 of /proc/<pid>/stat, whole thread group) summed over
a process and all its live descendants, so nginx's master+worker or Envoy's many threads count
as one proxy. Memory is VmRSS from /proc/<pid>/status, summed the same way.
"""
from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    s = _read(f"/proc/{pid}/stat")
    if s is None:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = s[s.rindex(")") + 2:].split()
    return rest  # rest[0] is field 3 (state)


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f is None:
            continue
        ppid = int(f[1])  # field 4
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its live descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid's process tree, in seconds."""
    total = 0
    for p in tree(pid):
        f = _stat_fields(p)
        if f is None:
            continue
        total += int(f[11]) + int(f[12])  # fields 14, 15
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    """VmRSS summed over pid's process tree, in bytes."""
    total = 0
    for p in tree(pid):
        s = _read(f"/proc/{p}/status")
        if not s:
            continue
        for line in s.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def smaps_rollup(pid: int) -> dict[str, int]:
    """The memory of one process by kind (/proc/<pid>/smaps_rollup, bytes): Rss, Anonymous
    (heap, stacks, anonymous mappings), Pss_File (pages of mapped files: the executable's code
    and read-only data), and the rest of the file's fields; {} when it cannot be read."""
    out = {}
    for line in (_read(f"/proc/{pid}/smaps_rollup") or "").splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def listening_ports(pid: int) -> set[int]:
    """The TCP ports pid's sockets listen on (/proc/<pid>/fd and /proc/net/tcp, tcp6), found
    without connecting: a connection to a sidecar's virtualOutbound/virtualInbound listener that
    no iptables rule redirected has no original destination but that listener itself."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (_read(table) or "").splitlines()[1:]:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def core_times() -> dict[int, tuple[int, int]]:
    """Per-core (busy, total) jiffies from /proc/stat."""
    out = {}
    for line in (_read("/proc/stat") or "").splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            parts = line.split()
            vals = [int(x) for x in parts[1:]]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
            total = sum(vals[:8])  # guest time is already counted in user
            out[int(parts[0][3:])] = (total - idle, total)
    return out


def core_busy(before: dict, after: dict) -> dict[int, float]:
    """Fraction busy per core between two core_times() samples."""
    res = {}
    for c, (b1, t1) in after.items():
        b0, t0 = before.get(c, (0, 0))
        res[c] = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return res


def machine_info() -> dict:
    cpu = "unknown"
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    u = os.uname()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(mem / 2**30, 1),
        "kernel": f"{u.sysname} {u.release}",
        "hostname": u.nodename,
        "loadavg": (_read("/proc/loadavg") or "").split()[:3],
    }

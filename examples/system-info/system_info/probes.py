"""Readings from /proc and os.statvfs: plain functions, no I/O beyond the files they name.

Every function takes the /proc root so tests can point it at a fake tree.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

# Filesystems an operator cares about when asking "is a disk filling up".
REAL_FS = {
    "ext2",
    "ext3",
    "ext4",
    "xfs",
    "btrfs",
    "zfs",
    "f2fs",
    "vfat",
    "exfat",
    "ntfs",
    "ntfs3",
    "jfs",
    "reiserfs",
    "overlay",
    "fuseblk",
    "nfs",
    "nfs4",
    "cifs",
}


def uptime(proc: str = "/proc") -> dict[str, Any]:
    with open(f"{proc}/uptime") as f:
        seconds = float(f.read().split()[0])
    return {"uptime_seconds": round(seconds, 1), "boot_time": round(time.time() - seconds)}


def load(proc: str = "/proc") -> dict[str, Any]:
    with open(f"{proc}/loadavg") as f:
        parts = f.read().split()
    running, total = parts[3].split("/")
    cpus = os.cpu_count() or 1
    return {
        "load1": float(parts[0]),
        "load5": float(parts[1]),
        "load15": float(parts[2]),
        "cpus": cpus,
        "running_tasks": int(running),
        "total_tasks": int(total),
        "load1_per_cpu": round(float(parts[0]) / cpus, 2),
    }


def memory(proc: str = "/proc") -> dict[str, Any]:
    info: dict[str, int] = {}
    with open(f"{proc}/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            fields = rest.split()
            if fields:
                info[name] = int(fields[0]) * (1024 if len(fields) > 1 and fields[1] == "kB" else 1)
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    swap_total = info.get("SwapTotal", 0)
    swap_free = info.get("SwapFree", 0)
    return {
        "total_bytes": total,
        "available_bytes": available,
        "used_bytes": total - available,
        "used_percent": round(100 * (total - available) / total, 1) if total else 0.0,
        "swap_total_bytes": swap_total,
        "swap_used_bytes": swap_total - swap_free,
    }


def disks(proc: str = "/proc") -> list[dict[str, Any]]:
    seen_devices: set[str] = set()
    out = []
    try:
        with open(f"{proc}/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        mounts = []
    candidates = [(m[1], m[0], m[2]) for m in mounts if len(m) >= 3 and m[2] in REAL_FS]
    if not any(mp == "/" for mp, _, _ in candidates):
        candidates.insert(0, ("/", "rootfs", "rootfs"))
    for mountpoint, device, fstype in candidates:
        mountpoint = mountpoint.replace("\\040", " ")
        if device in seen_devices and device not in ("rootfs", "overlay"):
            continue
        try:
            st = os.statvfs(mountpoint)
        except OSError:
            continue
        total = st.f_blocks * st.f_frsize
        if total == 0:
            continue
        free = st.f_bavail * st.f_frsize
        used = total - st.f_bfree * st.f_frsize
        seen_devices.add(device)
        out.append(
            {
                "mount": mountpoint,
                "device": device,
                "fstype": fstype,
                "total_bytes": total,
                "used_bytes": used,
                "free_bytes": free,
                "used_percent": round(100 * used / (used + free), 1) if used + free else 0.0,
            }
        )
    return out


def summary(proc: str = "/proc") -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "kernel": os.uname().release,
        "uptime": uptime(proc),
        "load": load(proc),
        "memory": memory(proc),
        "disks": disks(proc),
        "collected_at": round(time.time(), 3),
    }

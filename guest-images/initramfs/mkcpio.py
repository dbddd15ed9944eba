#!/usr/bin/env python3
"""Write a deterministic newc ("070701") cpio archive for a Linux initramfs.

Usage: mkcpio.py LIST STAGING OUTPUT [--gzip]

LIST uses the kernel's usr/gen_init_cpio format, one entry a line:
    dir   <name> <mode> <uid> <gid>
    file  <name> <location> <mode> <uid> <gid>     (location relative to STAGING)
    nod   <name> <mode> <uid> <gid> <c|b> <maj> <min>
    slink <name> <target> <mode> <uid> <gid>
Modes are octal. Blank lines and lines starting with '#' are ignored.

Device nodes are written straight into the archive, so no root privileges or
mknod are needed. Every timestamp is 0 and inode numbers count up from 1 in
list order, so the same inputs always give the same bytes (gzip included:
its header time is 0 and it stores no file name).
"""

import gzip
import os
import stat
import sys

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class ListError(Exception):
    pass


def pad4(length):
    return b"\0" * (-length % 4)


def entry(ino, mode, uid, gid, nlink, name, data=b"", rdev=(0, 0)):
    """One newc record: header, NUL-terminated name, data, each 4-aligned."""
    name_bytes = name.encode() + b"\0"
    fields = (ino, mode, uid, gid, nlink, 0, len(data), 0, 0,
              rdev[0], rdev[1], len(name_bytes), 0)
    header = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
    record = header + name_bytes
    record += pad4(len(record))
    record += data + pad4(len(data))
    return record


def parse_line(lineno, line, staging):
    """Turn one list line into (mode, uid, gid, nlink, name, data, rdev)."""
    words = line.split()
    kind, args = words[0], words[1:]
    want = {"dir": 4, "file": 5, "nod": 7, "slink": 5}
    if kind not in want:
        raise ListError(f"line {lineno}: unknown entry type {kind!r}")
    if len(args) != want[kind]:
        raise ListError(f"line {lineno}: {kind} takes {want[kind]} fields, got {len(args)}")
    name = args[0].lstrip("/")
    if not name:
        raise ListError(f"line {lineno}: empty name")
    try:
        if kind == "dir":
            mode, uid, gid = int(args[1], 8), int(args[2]), int(args[3])
            return stat.S_IFDIR | mode, uid, gid, 2, name, b"", (0, 0)
        if kind == "file":
            path = os.path.join(staging, args[1])
            mode, uid, gid = int(args[2], 8), int(args[3]), int(args[4])
            with open(path, "rb") as f:
                data = f.read()
            return stat.S_IFREG | mode, uid, gid, 1, name, data, (0, 0)
        if kind == "nod":
            mode, uid, gid = int(args[1], 8), int(args[2]), int(args[3])
            if args[4] not in ("c", "b"):
                raise ListError(f"line {lineno}: device type must be c or b")
            ftype = stat.S_IFCHR if args[4] == "c" else stat.S_IFBLK
            return ftype | mode, uid, gid, 1, name, b"", (int(args[5]), int(args[6]))
        # slink
        mode, uid, gid = int(args[2], 8), int(args[3]), int(args[4])
        return stat.S_IFLNK | mode, uid, gid, 1, name, args[1].encode(), (0, 0)
    except ValueError as e:
        raise ListError(f"line {lineno}: {e}") from e
    except OSError as e:
        raise ListError(f"line {lineno}: {e}") from e


def build(list_path, staging):
    out = bytearray()
    seen = set()
    with open(list_path) as f:
        lines = f.read().splitlines()
    ino = 0
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        mode, uid, gid, nlink, name, data, rdev = parse_line(lineno, line, staging)
        if name in seen:
            raise ListError(f"line {lineno}: duplicate entry {name}")
        parent = os.path.dirname(name)
        if parent and parent not in seen:
            raise ListError(f"line {lineno}: {name} comes before its directory {parent}")
        seen.add(name)
        ino += 1
        out += entry(ino, mode, uid, gid, nlink, name, data, rdev)
    out += entry(0, 0, 0, 0, 1, TRAILER)
    return bytes(out)


def main(argv):
    args = [a for a in argv[1:] if a != "--gzip"]
    if len(args) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    list_path, staging, output = args
    try:
        archive = build(list_path, staging)
    except ListError as e:
        print(f"mkcpio: {list_path}: {e}", file=sys.stderr)
        return 1
    if "--gzip" in argv:
        archive = gzip.compress(archive, compresslevel=9, mtime=0)
    tmp = output + ".tmp"
    with open(tmp, "wb") as f:
        f.write(archive)
    os.replace(tmp, output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Copy an x86_64 vmlinux with its PVH entry note disabled.

    drop-pvh-note.py IN OUT

A VMM enters an ELF vmlinux through PVH when it finds the Xen ELF note
XEN_ELFNOTE_PHYS32_ENTRY (type 18) in a PT_NOTE segment, and through the
Linux 64-bit boot protocol at e_entry otherwise. To test the second path
with the same kernel, this rewrites that note's type to an unassigned Xen
note type in place: no byte moves, every other note stays, and readers skip
notes they do not know. Fails unless exactly one such note was found.
"""

import struct
import sys

PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18
# Not assigned by xen/include/public/elfnote.h (which ends at 20).
UNASSIGNED_XEN_NOTE = 0x4D45  # "ME"rcury


def align4(n):
    return (n + 3) & ~3


def main(src, dst):
    data = bytearray(open(src, "rb").read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit(f"{src}: not a little-endian ELF64 file")
    (e_phoff,) = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    found = 0
    for i in range(e_phnum):
        ph = e_phoff + i * e_phentsize
        p_type, _flags, p_offset = struct.unpack_from("<IIQ", data, ph)
        (p_filesz,) = struct.unpack_from("<Q", data, ph + 0x20)
        if p_type != PT_NOTE:
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name = bytes(data[pos + 12 : pos + 12 + namesz]).rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                struct.pack_into("<I", data, pos + 8, UNASSIGNED_XEN_NOTE)
                found += 1
            pos += 12 + align4(namesz) + align4(descsz)
    if found != 1:
        sys.exit(f"{src}: found {found} PVH entry notes, expected 1")
    open(dst, "wb").write(data)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: drop-pvh-note.py IN OUT")
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/env python3
"""Derive the test-guest artifacts from the linked ELF.

    mkimage.py test-guest         ELF OUT   copy of the ELF (PVH note kept)
    mkimage.py test-guest-elf64   ELF OUT   the ELF without its PT_NOTE (no PVH entry)
    mkimage.py test-guest-bzimage ELF OUT   bzImage: boot sector + 1 setup sector
                                            + the flat image loaded at 0x100000

OUT is replaced atomically, and only when its content changes (so its mtime
tracks real changes and readers never see a half-written file).

bzImage layout (Linux boot protocol 2.15, Documentation/arch/x86/boot.rst):
the setup header at 0x1f1 declares setup_sects = 1, so the protected-mode
part starts at file offset (1 + 1) * 512 = 0x400. It is the ELF's single
PT_LOAD segment, byte for byte, loaded at code32_start = 0x100000; the 64-bit
entry (XLF_KERNEL_64) is at load address + 0x200 = the ELF's e_entry. There is
no real-mode setup code: a real-mode jump into it halts.
"""

import os
import struct
import sys
import tempfile

PT_LOAD = 1
PT_NOTE = 4
SHT_PROGBITS = 1
SHT_NOTE = 7

LOAD_ADDRESS = 0x100000
ENTRY64_OFFSET = 0x200
SETUP_SECTS = 1
SECTOR = 512
BOOT_FLAG = 0xAA55
HDRS = 0x53726448  # "HdrS"
BOOT_PROTOCOL = 0x020F
LOADED_HIGH = 0x01
XLF_KERNEL_64 = 0x01
CMDLINE_SIZE = 2047
KERNEL_VERSION = b"mercury-test-guest\0"


class Elf:
    """The few ELF64 fields this tool needs."""

    def __init__(self, data: bytes):
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            sys.exit("mkimage: not a little-endian ELF64 file")
        self.data = data
        (self.entry, self.phoff, self.shoff) = struct.unpack_from("<QQQ", data, 0x18)
        (self.phentsize, self.phnum, self.shentsize, self.shnum) = struct.unpack_from(
            "<HHHH", data, 0x36
        )

    def phdrs(self):
        for i in range(self.phnum):
            off = self.phoff + i * self.phentsize
            p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz = struct.unpack_from(
                "<IIQQQQQ", self.data, off
            )
            yield i, off, p_type, p_offset, p_paddr, p_filesz, p_memsz

    def single_load(self):
        loads = [p for p in self.phdrs() if p[2] == PT_LOAD]
        if len(loads) != 1:
            sys.exit(f"mkimage: expected one PT_LOAD segment, found {len(loads)}")
        return loads[0]


def without_pvh_note(elf: Elf) -> bytes:
    """Drop the (last) PT_NOTE program header and retype its sections."""
    notes = [p for p in elf.phdrs() if p[2] == PT_NOTE]
    if len(notes) != 1 or notes[0][0] != elf.phnum - 1:
        sys.exit("mkimage: expected exactly one PT_NOTE, as the last program header")
    out = bytearray(elf.data)
    struct.pack_into("<H", out, 0x38, elf.phnum - 1)
    off = notes[0][1]
    out[off : off + elf.phentsize] = bytes(elf.phentsize)
    # Also retype SHT_NOTE sections so that section-based tools see no note.
    for i in range(elf.shnum):
        sh = elf.shoff + i * elf.shentsize
        if struct.unpack_from("<I", out, sh + 4)[0] == SHT_NOTE:
            struct.pack_into("<I", out, sh + 4, SHT_PROGBITS)
    return bytes(out)


def bzimage(elf: Elf) -> bytes:
    _, _, _, p_offset, p_paddr, p_filesz, p_memsz = elf.single_load()
    if p_paddr != LOAD_ADDRESS or elf.entry != LOAD_ADDRESS + ENTRY64_OFFSET:
        sys.exit(
            f"mkimage: image must load at {LOAD_ADDRESS:#x} with its 64-bit entry at "
            f"+{ENTRY64_OFFSET:#x} (got load {p_paddr:#x}, entry {elf.entry:#x})"
        )
    payload = elf.data[p_offset : p_offset + p_filesz]
    setup = bytearray((1 + SETUP_SECTS) * SECTOR)

    # Real-mode entry (setup segment:0x200 jumps here): cli; hlt; jmp $-1.
    park = 0x270
    setup[park : park + 4] = b"\xfa\xf4\xeb\xfd"
    version_offset = park + 0x10
    setup[version_offset : version_offset + len(KERNEL_VERSION)] = KERNEL_VERSION

    def put(fmt, offset, value):
        struct.pack_into("<" + fmt, setup, offset, value)

    put("B", 0x1F1, SETUP_SECTS)
    put("I", 0x1F4, (len(payload) + 15) // 16)  # syssize, 16-byte units
    put("H", 0x1FA, 0xFFFF)  # vid_mode: normal
    put("H", 0x1FE, BOOT_FLAG)
    setup[0x200:0x202] = bytes([0xEB, park - 0x202])  # jmp short park
    put("I", 0x202, HDRS)
    put("H", 0x206, BOOT_PROTOCOL)
    put("H", 0x20E, version_offset - 0x200)  # kernel_version
    put("B", 0x211, LOADED_HIGH)  # loadflags
    put("I", 0x214, LOAD_ADDRESS)  # code32_start
    put("I", 0x22C, 0x7FFFFFFF)  # initrd_addr_max
    put("I", 0x230, 0x100000)  # kernel_alignment
    put("B", 0x234, 0)  # relocatable_kernel: no, load at pref_address
    put("B", 0x235, 12)  # min_alignment (log2)
    put("H", 0x236, XLF_KERNEL_64)  # xloadflags
    put("I", 0x238, CMDLINE_SIZE)
    put("Q", 0x258, LOAD_ADDRESS)  # pref_address
    put("I", 0x260, (p_memsz + 0xFFF) & ~0xFFF)  # init_size: image + .bss
    return bytes(setup) + payload


def write_if_changed(path: str, content: bytes) -> None:
    try:
        with open(path, "rb") as f:
            if f.read() == content:
                return
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".mkimage-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    variant, elf_path, out_path = sys.argv[1:]
    with open(elf_path, "rb") as f:
        elf = Elf(f.read())
    if variant == "test-guest":
        content = elf.data
    elif variant == "test-guest-elf64":
        content = without_pvh_note(elf)
    elif variant == "test-guest-bzimage":
        content = bzimage(elf)
    else:
        sys.exit(f"mkimage: unknown variant {variant}")
    write_if_changed(out_path, content)


if __name__ == "__main__":
    main()

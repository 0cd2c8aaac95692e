"""Deterministic newc cpio ramdisks: a streaming writer and a streaming reader.

Writing::

    from builder.initramfs import plan_tree, write_ramdisk
    write_ramdisk(out, plan_tree(rootfs, prefix="rootfs"), epoch=source_date_epoch)

Reading::

    from builder.initramfs import iter_members, extract
    with open(ramdisk, "rb") as fh:
        for m in iter_members(fh):
            print(m.name, m.kind, m.size, m.data.read() if m.is_file else m.link_target)
    extract(ramdisk, dest_dir)    # refuses '..' and writing through symlinks
"""

from builder.initramfs.entries import (
    Entry,
    char_device,
    directory,
    file_bytes,
    file_path,
    normalize_name,
    plan_tar,
    plan_tree,
    symlink,
)
from builder.initramfs.member import CpioMember
from builder.initramfs.newc import EntryKind
from builder.initramfs.reader import ExtractResult, extract, iter_members, list_members
from builder.initramfs.writer import WriteStats, write_newc, write_ramdisk

__all__ = [
    "CpioMember",
    "Entry",
    "EntryKind",
    "ExtractResult",
    "WriteStats",
    "char_device",
    "directory",
    "extract",
    "file_bytes",
    "file_path",
    "iter_members",
    "list_members",
    "normalize_name",
    "plan_tar",
    "plan_tree",
    "symlink",
    "write_newc",
    "write_ramdisk",
]

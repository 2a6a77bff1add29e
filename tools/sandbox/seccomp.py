"""A seccomp-bpf filter for the sandbox, assembled here as classic BPF (no libseccomp needed).

bubblewrap loads it with ``--seccomp FD`` just before it executes the supervisor, so
it applies to every process in the sandbox. Refused calls fail with EPERM (a program
sees an ordinary permission error) except ``clone3``, which fails with ENOSYS so that
glibc falls back to ``clone``, whose flags a filter can inspect (clone3 passes them in
memory, out of a filter's reach). Syscalls of a foreign ABI (x32, i386 on x86_64) are
refused wholesale, as their numbers would slip past the table.

Kernel reference: Documentation/userspace-api/seccomp_filter.rst; struct seccomp_data
is ``{int nr; u32 arch; u64 instruction_pointer; u64 args[6]}``.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

# BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000

_OFF_NR, _OFF_ARCH, _OFF_ARG0_LO, _OFF_ARG1_LO = 0, 4, 16, 24

TIOCSTI = 0x5412
TIOCLINUX = 0x541C
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# Refused outright (EPERM). Names map to numbers per architecture below.
DENIED = (
    "ptrace process_vm_readv process_vm_writev io_uring_setup io_uring_enter io_uring_register "
    "mount umount2 pivot_root chroot unshare setns keyctl add_key request_key bpf perf_event_open "
    "userfaultfd kexec_load kexec_file_load init_module finit_module delete_module open_tree move_mount "
    "fsopen fsconfig fsmount fspick mount_setattr acct swapon swapoff reboot quotactl"
).split()


@dataclass(frozen=True, slots=True)
class Arch:
    audit: int
    numbers: dict[str, int]
    x32_bit: bool  # x86_64: numbers with bit 30 set are the x32 ABI


_X86_64 = Arch(
    audit=0xC000003E,
    x32_bit=True,
    numbers={
        "ioctl": 16, "clone": 56, "clone3": 435, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "keyctl": 250, "add_key": 248,
        "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246,
        "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169, "quotactl": 179,
    },
)  # fmt: skip

_AARCH64 = Arch(
    audit=0xC00000B7,
    x32_bit=False,
    numbers={
        "ioctl": 29, "clone": 220, "clone3": 435, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "kexec_load": 104,
        "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "acct": 89, "swapon": 224, "swapoff": 225, "reboot": 142, "quotactl": 60,
    },
)  # fmt: skip

ARCHES = {"x86_64": _X86_64, "aarch64": _AARCH64}


class UnsupportedArch(Exception):
    """No syscall table for this machine; the bwrap backend is not viable here."""


def native_arch() -> Arch:
    machine = platform.machine()
    try:
        return ARCHES[machine]
    except KeyError:
        raise UnsupportedArch(f"no seccomp syscall table for {machine!r} (supported: {', '.join(ARCHES)})") from None


def build_filter(arch: Arch | None = None) -> bytes:
    """Return the filter as the raw ``struct sock_filter[]`` bytes ``bwrap --seccomp`` reads."""
    arch = arch or native_arch()
    prog: list[tuple[int, int | str, int | str, int]] = [
        (_LD_W_ABS, 0, 0, _OFF_ARCH),
        (_JEQ_K, 0, "deny", arch.audit),
        (_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if arch.x32_bit:
        prog.append((_JGE_K, "deny", 0, 0x40000000))
    prog += [(_JEQ_K, "deny", 0, arch.numbers[name]) for name in DENIED]
    prog += [
        (_JEQ_K, "enosys", 0, arch.numbers["clone3"]),
        (_JEQ_K, "ioctl", 0, arch.numbers["ioctl"]),
        (_JEQ_K, "clone", 0, arch.numbers["clone"]),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    labels = {"ioctl": len(prog)}
    prog += [
        (_LD_W_ABS, 0, 0, _OFF_ARG1_LO),  # the kernel truncates the ioctl request to 32 bits
        (_JEQ_K, "deny", 0, TIOCSTI),
        (_JEQ_K, "deny", 0, TIOCLINUX),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    labels["clone"] = len(prog)
    prog += [(_LD_W_ABS, 0, 0, _OFF_ARG0_LO), (_JSET_K, "deny", 0, CLONE_NAMESPACE_FLAGS), (_RET_K, 0, 0, _RET_ALLOW)]
    labels["deny"] = len(prog)
    prog.append((_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
    labels["enosys"] = len(prog)
    prog.append((_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS))
    return b"".join(_encode(i, ins, labels) for i, ins in enumerate(prog))


def _encode(index: int, ins: tuple[int, int | str, int | str, int], labels: dict[str, int]) -> bytes:
    code, jt, jf, k = ins

    def offset(target: int | str) -> int:
        if isinstance(target, int):
            return target
        rel = labels[target] - index - 1
        if not 0 <= rel <= 255:
            raise ValueError(f"BPF jump to {target} out of range ({rel})")
        return rel

    return struct.pack("=HBBI", code, offset(jt), offset(jf), k)

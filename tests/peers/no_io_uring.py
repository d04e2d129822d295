#!/usr/bin/env python3
"""Test peer: runs a command with io_uring refused, as Docker's and containerd's default
seccomp profiles refuse it.

    no_io_uring.py PROGRAM [ARG...]

Installs a seccomp filter (no_new_privs first, so no privilege is needed) under which
io_uring_setup, io_uring_enter and io_uring_register fail with EPERM and every other system
call is allowed, then execs PROGRAM, which keeps the filter (so its PID is PROGRAM's).
x86_64 and aarch64 number these calls alike (425-427).
"""
import ctypes
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1
IO_URING_SYSCALLS = (425, 426, 427)

BPF_LD_W_ABS = 0x20  # load the 32-bit word at an offset of seccomp_data (0: the call number)
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


def instruction(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def program() -> bytes:
    calls = len(IO_URING_SYSCALLS)
    out = instruction(BPF_LD_W_ABS, 0, 0, 0)
    for i, nr in enumerate(IO_URING_SYSCALLS):
        # Match: jump to the EPERM return (after the remaining compares and the allow).
        out += instruction(BPF_JEQ_K, calls - i, 0, nr)
    out += instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    out += instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM)
    return out


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    code = program()
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        sys.exit(f"prctl(SECCOMP): {os.strerror(ctypes.get_errno())}")
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()

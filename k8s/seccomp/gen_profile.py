#!/usr/bin/env python3
# Writes k8s/seccomp/shardproxy.json: the seccomp profile for the istio-proxy container.
"""Generate shardproxy's Localhost seccomp profile.

Design (k8s/README.md explains it at more length): deny by default (EPERM), then allow every
system call that libseccomp -- the library runc and crun use to load profiles -- knows for
x86_64 or aarch64, except the ones listed in DENIED below. DENIED follows what container
runtimes' default profiles keep from a container without capabilities (module loading, mounts
and namespaces, clocks, the kernel keyring, reaching into other processes, ...); io_uring_setup,
io_uring_enter and io_uring_register, which current runtime defaults block, stay allowed: that
is the point of this profile. `clone` is allowed only without namespace flags and `clone3`
answers ENOSYS, so that glibc falls back to `clone`, whose flags a filter can inspect.

A syscall newer than the machine's libseccomp is not in the list, so it is denied: the profile
fails closed. Re-run after a libseccomp upgrade to pick new ones up:

    python3 k8s/seccomp/gen_profile.py > k8s/seccomp/shardproxy.json
"""

import ctypes
import ctypes.util
import json
import sys

# Kept out of the allow-list, by reason. Names absent on an architecture are harmless.
DENIED = {
    # kernel code and machine state
    "init_module", "finit_module", "delete_module", "create_module", "query_module",
    "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
    "acct", "syslog", "vhangup", "iopl", "ioperm", "modify_ldt", "vm86", "vm86old",
    "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "personality", "lookup_dcookie",
    "quotactl", "quotactl_fd", "sethostname", "setdomainname",
    # mounts, root changes, namespaces
    "mount", "umount", "umount2", "pivot_root", "chroot", "setns", "unshare",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "fanotify_init",
    # clocks (not namespaced)
    "clock_settime", "clock_adjtime", "settimeofday", "stime",
    # the kernel keyring (not namespaced)
    "add_key", "keyctl", "request_key",
    # other processes' memory and descriptors; kernel introspection
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
    "pidfd_getfd", "perf_event_open", "bpf", "userfaultfd", "move_pages", "migrate_pages",
    # file handles (open_by_handle_at walks around the container's mount root)
    "name_to_handle_at", "open_by_handle_at",
    # reserved numbers Linux never implemented (ENOSYS either way)
    "afs_syscall", "tuxcall", "security", "vserver", "putpmsg", "getpmsg",
    "epoll_ctl_old", "epoll_wait_old",
    # handled by their own rules below
    "clone", "clone3",
}

# The io_uring calls shardproxy's shards are built on.
IO_URING = ["io_uring_setup", "io_uring_enter", "io_uring_register"]

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
# | CLONE_NEWNET: `clone` is allowed only when none of these is set.
CLONE_NAMESPACE_FLAGS = 0x7E020000
ENOSYS = 38
EPERM = 1

ARCHES = ["x86_64", "aarch64"]
MAX_SYSCALL_NR = 1024


def libseccomp():
    path = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(path)
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    return lib


def arch_token(lib, arch):
    token = lib.seccomp_arch_resolve_name(arch.encode())
    if token == 0:
        raise SystemExit(f"libseccomp does not know the architecture {arch}")
    return token


def syscall_names(lib):
    """Every syscall name libseccomp knows for ARCHES."""
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    names = set()
    for arch in ARCHES:
        token = arch_token(lib, arch)
        for nr in range(MAX_SYSCALL_NR):
            ptr = lib.seccomp_syscall_resolve_num_arch(token, nr)
            if ptr:
                names.add(ctypes.string_at(ptr).decode())
                libc.free(ptr)
    return names


def known_syscall(lib, name):
    """True when `name` is a real syscall on one of ARCHES (as libseccomp resolves it)."""
    for arch in ARCHES:
        if lib.seccomp_syscall_resolve_name_arch(arch_token(lib, arch), name.encode()) >= 0:
            return True
    return False


def profile(names):
    allowed = sorted(names - DENIED)
    missing = [n for n in IO_URING if n not in allowed]
    if missing:
        raise SystemExit(f"libseccomp does not know {missing}: too old for io_uring")
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {
                        "index": 0,
                        "value": CLONE_NAMESPACE_FLAGS,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    }


def main():
    json.dump(profile(syscall_names(libseccomp())), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

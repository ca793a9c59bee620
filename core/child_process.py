"""Start a child process that holds no secret and, for the file reader, cannot reach any network.

Environment: a child gets an allow-list (:data:`ALLOWED_ENV`: locale, paths, temp dir, thread counts),
never ``{**os.environ}``, so a parser exploit finds no SLACK_BOT_TOKEN, OPENAI_API_KEY or HF_TOKEN in
its ``/proc/<pid>/environ``. Whatever else a child needs is passed explicitly.

Network (:func:`start_isolated`): two layers, applied in the forked child before it runs anything:
1. a seccomp filter that makes ``socket()`` (every address family, Unix sockets included) and
   ``io_uring_setup()`` (which can open sockets without ``socket()``) fail with EACCES, and kills the
   process on a syscall of another architecture (the 32-bit ``socketcall`` route). It needs no
   privilege (with ``no_new_privs``) and works inside containers, so it is the layer relied on.
   x86-64 and aarch64 only.
2. a new network namespace (with a user namespace, so no privilege is needed): only a loopback that
   is down. Container runtimes and some distributions refuse unprivileged user namespaces; then the
   filter alone holds.
The child reports which layers took hold through a pipe closed at exec; where none did, the caller
logs a warning and the child still runs under its other limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import struct
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

# Variables a child may inherit: none of them names or holds a credential.
ALLOWED_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LC_NUMERIC", "TZ",
               "TMPDIR", "TEMP", "TMP", "PYTHONPATH", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "OPENBLAS_NUM_THREADS", "TESSDATA_PREFIX")
NO_ISOLATION = "none"

# <linux/prctl.h>, <linux/seccomp.h>, <linux/filter.h>, <linux/audit.h>, <sched.h>
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06
_BPF_INSTRUCTION_BYTES = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_X32_SYSCALL_BIT = 0x40000000
# machine -> (AUDIT_ARCH_*, __NR_socket, __NR_io_uring_setup)
_ARCHES = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}


def allowed_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of this process's environment, plus ``extra``."""
    env = {name: os.environ[name] for name in ALLOWED_ENV if name in os.environ}
    env.update(extra or {})
    return env


def start_isolated(args: Sequence[str], extra_env: Mapping[str, str] | None = None,
                   **popen: Any) -> tuple[subprocess.Popen[bytes], str]:
    """``Popen(args)`` with :func:`allowed_environment` and no network; returns the process and the layers
    that took hold ("seccomp+netns", "seccomp", "netns" or "none")."""
    isolate = _Isolation()
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(args, env=allowed_environment(extra_env),
                                   preexec_fn=lambda: isolate.apply(write_end), **popen)
    finally:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as report:
            layers = report.read().decode("ascii", "replace")
    return process, layers or NO_ISOLATION


class _SockFprog(ctypes.Structure):
    """struct sock_fprog: a seccomp program's length (in instructions) and address."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _Isolation:
    """Everything the forked child calls is prepared here, in the parent: the child between fork and exec
    must not import, load libraries or take locks another thread might have held at the fork."""

    def __init__(self) -> None:
        self.unshare: Any = None
        self.prctl: Any = None
        self.program: _SockFprog | None = None
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            self.unshare, self.prctl = libc.unshare, libc.prctl  # looked up now: dlsym may take a lock
        arch = _ARCHES.get(platform.machine())
        if self.prctl is not None and arch is not None:
            code = _socket_filter(*arch)
            self.filter = ctypes.create_string_buffer(code, len(code))  # kept: the program points into it
            self.program = _SockFprog(len(code) // _BPF_INSTRUCTION_BYTES, ctypes.addressof(self.filter))
            self.program_ref = ctypes.byref(self.program)

    def apply(self, report_fd: int) -> None:
        """In the child, after fork: the network namespace (where allowed), then the filter; report which."""
        layers = []
        if self.unshare is not None and self.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
            layers.append("netns")
        if (self.program is not None and self.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                and self.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, self.program_ref, 0, 0) == 0):
            layers.insert(0, "seccomp")
        os.write(report_fd, "+".join(layers).encode("ascii"))
        os.close(report_fd)


def _socket_filter(audit_arch: int, nr_socket: int, nr_io_uring_setup: int) -> bytes:
    """A classic-BPF seccomp program: other architectures die; socket() and io_uring_setup() get EACCES."""
    deny = _SECCOMP_RET_ERRNO | errno.EACCES

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    return b"".join([
        op(_BPF_LD_W_ABS, 4),  # seccomp_data.arch
        op(_BPF_JEQ_K, audit_arch, jt=1),
        op(_BPF_RET_K, _SECCOMP_RET_KILL_PROCESS),
        op(_BPF_LD_W_ABS, 0),  # seccomp_data.nr
        op(_BPF_JGE_K, _X32_SYSCALL_BIT, jt=2),  # x32 numbers on x86-64: deny rather than look them up
        op(_BPF_JEQ_K, nr_socket, jt=1),
        op(_BPF_JEQ_K, nr_io_uring_setup, jt=0, jf=1),
        op(_BPF_RET_K, deny),
        op(_BPF_RET_K, _SECCOMP_RET_ALLOW),
    ])

// libsystemd for CreddSystemd: socket activation, sd_notify, watchdog, native journal.
#ifndef CREDD_CSYSTEMD_SHIM_H
#define CREDD_CSYSTEMD_SHIM_H
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/memfd.h>
#include <sys/prctl.h>

// glibc declares memfd_create() only under _GNU_SOURCE, which Swift's Glibc module is not built with,
// so it does not import: call the system call directly (a variadic call, hence the wrapper).
// The fd is close-on-exec and accepts seals (F_ADD_SEALS).
static inline int credd_memfd_create_sealable(const char *name) {
    return (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

// The memfd seal commands and flags are declared only under _GNU_SOURCE too; these are their values in
// the kernel's ABI (include/uapi/linux/fcntl.h: F_LINUX_SPECIFIC_BASE 1024 + 9 and + 10).
enum {
    CREDD_F_ADD_SEALS = 1033,
    CREDD_F_GET_SEALS = 1034,
    CREDD_F_SEAL_SEAL = 0x0001,
    CREDD_F_SEAL_SHRINK = 0x0002,
    CREDD_F_SEAL_GROW = 0x0004,
    CREDD_F_SEAL_WRITE = 0x0008,
};

// prctl() is variadic, so it does not import into Swift.
static inline int credd_set_dumpable(int dumpable) {
    return prctl(PR_SET_DUMPABLE, (unsigned long)dumpable, 0UL, 0UL, 0UL);
}
static inline int credd_get_dumpable(void) {
    return prctl(PR_GET_DUMPABLE, 0UL, 0UL, 0UL, 0UL);
}
#endif

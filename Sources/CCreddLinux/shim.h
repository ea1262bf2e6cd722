// Linux interfaces credd needs that Swift's Glibc module does not import: timerfd (the wall-clock watcher),
// thread names, and malloc_trim (the server gives freed heap back when its last connection closes).
#ifndef CREDD_CCREDDLINUX_SHIM_H
#define CREDD_CCREDDLINUX_SHIM_H
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>

// The flags as plain constants (glibc defines some as enum members, some as macros).
enum {
    CREDD_TFD_CLOEXEC = TFD_CLOEXEC,
    CREDD_TFD_TIMER_ABSTIME = TFD_TIMER_ABSTIME,
    CREDD_TFD_TIMER_CANCEL_ON_SET = TFD_TIMER_CANCEL_ON_SET,
};

// Names the calling thread (at most 15 bytes are kept). prctl() is variadic, so it does not import into Swift;
// pthread_setname_np() is declared only under _GNU_SOURCE.
static inline int credd_name_this_thread(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL);
}
#endif

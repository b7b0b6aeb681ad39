// The packaged binary runs on glibc 2.34 or newer (RHEL 9) although it is built
// on Debian 12 (glibc 2.36) with libstdc++ and libgcc linked in. Two of their
// calls name newer glibc symbols, and would make the binary need 2.36:
// - GCC 12's unwinder finds a frame's unwind tables with _dl_find_object
//   (GLIBC_2.35), so every exception would need it;
// - std::random_device (Beast's websocket PRNG, compiled in with the rest of
//   Beast) reads arc4random (GLIBC_2.36).
// The link wraps both (-Wl,--wrap=..., tunneld_portable_link in CMakeLists.txt)
// into __wrap_* (glibc_compat.cpp): glibc's own function when the running glibc
// has it, else the same answer from dl_iterate_phdr (what libgcc did before
// 2.35) or getrandom(2) (2.25). tests/integration/test_abi_contract.py fails on
// any symbol newer than GLIBC_2.34 in the packaged binary.
#pragma once
#include <dlfcn.h>

namespace tunneld {

// Looks up the loaded object whose PT_LOAD segments contain `address`, as
// _dl_find_object does: fills dlfo_map_start/end (the object's lowest and
// highest mapped addresses), dlfo_eh_frame (its PT_GNU_EH_FRAME, or null) and
// dlfo_link_map (null: nothing here uses it) and returns 0; -1 when no object
// contains it. Thread-safe (dl_iterate_phdr takes the loader's lock).
int find_object_by_phdr(void* address, dl_find_object* result);

// arc4random's contract (a uniformly random 32-bit value, never failing) from
// getrandom(2), retried on EINTR; aborts only if the kernel has no getrandom.
unsigned random_u32_by_getrandom();

// For tests: true makes both wrappers take the fallback (find_object_by_phdr,
// random_u32_by_getrandom) even where glibc has the newer function, as on a
// glibc 2.34 host.
void force_fallbacks(bool on);

// How many object lookups the fallback has answered (for tests).
unsigned long fallback_lookups();

}  // namespace tunneld

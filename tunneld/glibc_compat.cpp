// See glibc_compat.hpp: _dl_find_object and arc4random for the linked-in
// libgcc and libstdc++, on glibc 2.34 too.
#include "tunneld/glibc_compat.hpp"

#include <link.h>
#include <sys/random.h>

#include <cerrno>
#include <cstdlib>

#include <atomic>
#include <cstdint>
#include <cstring>

namespace tunneld {
namespace {

using FindObject = int (*)(void*, dl_find_object*);

std::atomic<bool> forced{false};
std::atomic<unsigned long> lookups{0};

struct Search {
    std::uintptr_t address;
    dl_find_object* result;
    bool found = false;
};

int visit(dl_phdr_info* info, size_t, void* data) {
    auto* search = static_cast<Search*>(data);
    std::uintptr_t low = UINTPTR_MAX, high = 0;
    bool contains = false;
    const void* eh_frame = nullptr;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_LOAD) {
            low = start < low ? start : low;
            high = start + ph.p_memsz > high ? start + ph.p_memsz : high;
            if (search->address >= start && search->address < start + ph.p_memsz) contains = true;
        } else if (ph.p_type == PT_GNU_EH_FRAME) {
            eh_frame = reinterpret_cast<const void*>(start);
        }
    }
    if (!contains) return 0;
    std::memset(search->result, 0, sizeof *search->result);
    search->result->dlfo_map_start = reinterpret_cast<void*>(low);
    search->result->dlfo_map_end = reinterpret_cast<void*>(high);
    search->result->dlfo_eh_frame = const_cast<void*>(eh_frame);
    search->found = true;
    return 1;  // stop: found
}

using Random32 = unsigned (*)();

FindObject glibc_find_object() {
    // Resolved once; null on glibc 2.34 (no GLIBC_2.35 version node).
    static const FindObject found =
        reinterpret_cast<FindObject>(dlvsym(RTLD_DEFAULT, "_dl_find_object", "GLIBC_2.35"));
    return found;
}

Random32 glibc_arc4random() {
    static const Random32 found =
        reinterpret_cast<Random32>(dlvsym(RTLD_DEFAULT, "arc4random", "GLIBC_2.36"));
    return found;
}

}  // namespace

int find_object_by_phdr(void* address, dl_find_object* result) {
    lookups.fetch_add(1, std::memory_order_relaxed);
    Search search{reinterpret_cast<std::uintptr_t>(address), result};
    dl_iterate_phdr(visit, &search);
    return search.found ? 0 : -1;
}

unsigned random_u32_by_getrandom() {
    unsigned value = 0;
    auto* at = reinterpret_cast<unsigned char*>(&value);
    size_t got = 0;
    while (got < sizeof value) {
        ssize_t n = getrandom(at + got, sizeof value - got, 0);
        if (n > 0) {
            got += static_cast<size_t>(n);
        } else if (n < 0 && errno != EINTR) {
            std::abort();  // no getrandom (Linux < 3.17): nothing safe to return
        }
    }
    return value;
}

unsigned long fallback_lookups() { return lookups.load(std::memory_order_relaxed); }

void force_fallbacks(bool on) { forced.store(on, std::memory_order_relaxed); }

}  // namespace tunneld

// The unwinder's reference to _dl_find_object lands here (-Wl,--wrap).
extern "C" int __wrap__dl_find_object(void* address, dl_find_object* result) {
    auto real = tunneld::glibc_find_object();
    if (real && !tunneld::forced.load(std::memory_order_relaxed)) return real(address, result);
    return tunneld::find_object_by_phdr(address, result);
}

// libstdc++'s std::random_device reference to arc4random lands here.
extern "C" unsigned __wrap_arc4random() {
    auto real = tunneld::glibc_arc4random();
    if (real && !tunneld::forced.load(std::memory_order_relaxed)) return real();
    return tunneld::random_u32_by_getrandom();
}

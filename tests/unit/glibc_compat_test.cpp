// The glibc 2.34 fallbacks of tunneld/glibc_compat.hpp: the unwinder's object
// lookup gives glibc's own answer, exceptions unwind through it, and the
// arc4random stand-in gives random values. The unit tests are linked like the
// daemon (-static-libgcc, -Wl,--wrap), so every exception in this binary goes
// through the wrapper.
#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>

#include "tunneld/glibc_compat.hpp"

extern "C" int __wrap__dl_find_object(void* address, dl_find_object* result);

namespace {

struct Fallbacks {
    Fallbacks() { tunneld::force_fallbacks(true); }
    ~Fallbacks() { tunneld::force_fallbacks(false); }
};

[[gnu::noinline]] void throw_from_here(int depth) {
    if (depth == 0) throw std::runtime_error("deep");
    throw_from_here(depth - 1);
}

void* code_in(const char* symbol) { return dlsym(RTLD_DEFAULT, symbol); }

// glibc's own _dl_find_object (a direct call would be wrapped too).
int glibc_find_object(void* address, dl_find_object* result) {
    using Fn = int (*)(void*, dl_find_object*);
    auto fn = reinterpret_cast<Fn>(dlvsym(RTLD_DEFAULT, "_dl_find_object", "GLIBC_2.35"));
    if (!fn) throw std::logic_error("this glibc has no _dl_find_object");
    return fn(address, result);
}

TEST(GlibcCompat, PhdrLookupAgreesWithGlibcsOwnFindObject) {
    int here_in_data = 0;
    for (void* address :
         {reinterpret_cast<void*>(&throw_from_here), code_in("strlen"), code_in("SSL_new"),
          code_in("PQconnectdb"), static_cast<void*>(&here_in_data)}) {
        ASSERT_NE(address, nullptr);
        dl_find_object ours{}, glibc{};
        int a = tunneld::find_object_by_phdr(address, &ours);
        int b = glibc_find_object(address, &glibc);  // glibc 2.36 here: the reference answer
        ASSERT_EQ(a, b);
        if (b != 0) continue;  // a stack address is in no object: both say -1
        EXPECT_EQ(ours.dlfo_eh_frame, glibc.dlfo_eh_frame);
        EXPECT_EQ(ours.dlfo_map_start, glibc.dlfo_map_start);
        EXPECT_LE(ours.dlfo_map_end, glibc.dlfo_map_end);  // glibc rounds the end up to a page
        EXPECT_GT(ours.dlfo_map_end, address);
    }
    dl_find_object none{};
    EXPECT_EQ(tunneld::find_object_by_phdr(reinterpret_cast<void*>(16), &none), -1);
}

TEST(GlibcCompat, ExceptionsUnwindThroughTheFallback) {
    Fallbacks on;
    dl_find_object via_wrapper{};
    ASSERT_EQ(__wrap__dl_find_object(reinterpret_cast<void*>(&throw_from_here), &via_wrapper), 0);
    auto before = tunneld::fallback_lookups();
    for (int i = 0; i < 100; ++i) {
        try {
            throw_from_here(i % 7);
            FAIL() << "no exception";
        } catch (const std::runtime_error& e) {
            EXPECT_EQ(std::string(e.what()), "deep");
        }
    }
#if TUNNELD_LINKED_PORTABLE
    // The unwinder itself asked the fallback (the binary is linked with --wrap).
    EXPECT_GE(tunneld::fallback_lookups() - before, 100u);
#else
    // Sanitizer builds link libgcc_s dynamically and wrap nothing.
    EXPECT_EQ(tunneld::fallback_lookups() - before, 0u);
#endif
}

TEST(GlibcCompat, RandomValuesWithoutArc4random) {
    Fallbacks on;
    std::set<unsigned> seen;
    unsigned ored = 0;
    for (int i = 0; i < 64; ++i) {
        unsigned v = tunneld::random_u32_by_getrandom();
        seen.insert(v);
        ored |= v;
    }
    EXPECT_GE(seen.size(), 63u);   // 64 draws of 32 bits: a repeat is a 1-in-2^21 event
    EXPECT_EQ(ored, 0xffffffffu);  // every bit seen set at least once
}

}  // namespace

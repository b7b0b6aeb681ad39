// Owners for handles of C libraries (OpenSSL, libnftnl, libmnl): a unique_ptr
// whose deleter is the library's own free function.
#pragma once
#include <memory>

namespace tunneld {

template <class T, auto Free>
struct CFree {
    void operator()(T* p) const { Free(p); }
};

template <class T, auto Free>
using CPtr = std::unique_ptr<T, CFree<T, Free>>;

}  // namespace tunneld

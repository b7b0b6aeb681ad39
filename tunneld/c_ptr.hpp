// Owners for handles of C libraries and the kernel, each defined once: a
// unique_ptr whose deleter is the library's own free function (OpenSSL's are in
// net/openssl_ptr.hpp, libnftnl's in firewall/nftnl_ptr.hpp), getaddrinfo's
// list, a directory stream and a file descriptor.
#pragma once
#include <dirent.h>
#include <netdb.h>
#include <unistd.h>

#include <memory>
#include <utility>

namespace tunneld {

template <class T, auto Free>
struct CFree {
    void operator()(T* p) const { Free(p); }
};

template <class T, auto Free>
using CPtr = std::unique_ptr<T, CFree<T, Free>>;

using AddrinfoPtr = CPtr<addrinfo, freeaddrinfo>;
using DirPtr = CPtr<DIR, closedir>;

// A file descriptor closed exactly once, by its last owner.
class UniqueFd {
  public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    // Gives the descriptor up without closing it.
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

  private:
    int fd_ = -1;
};

}  // namespace tunneld

#include "tunneld/net/spawn.hpp"

#include <spdlog/spdlog.h>

#include <stdexcept>

namespace tunneld {

std::atomic<std::uint64_t>& internal_errors() {
    static std::atomic<std::uint64_t> n{0};
    return n;
}

void report_internal_error(const char* what, std::exception_ptr e) {
    ++internal_errors();
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        spdlog::error("internal error in {}: {}; {} ended, the daemon goes on", what, x.what(),
                      what);
    } catch (...) {
        spdlog::error("internal error in {}: unknown exception; {} ended, the daemon goes on", what,
                      what);
    }
}

}  // namespace tunneld

// Starting the daemon's coroutines. Nothing is spawned `detached`: every
// coroutine ends in a handler that logs and counts an exception that escaped
// it, so one bad input or bug ends that one task (a connection, a probe
// round), never the process and its other connections.
#pragma once
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <cstdint>
#include <exception>
#include <utility>

namespace tunneld {

// Exceptions that escaped a coroutine or an event-loop handler since start
// (exported as tunneld_internal_errors_total).
std::atomic<std::uint64_t>& internal_errors();

// Logs "internal error in WHAT: ...; WHAT ended, the daemon goes on" and counts it.
void report_internal_error(const char* what, std::exception_ptr e);

struct ReportFailure {
    const char* what;
    void operator()(std::exception_ptr e) const {
        if (e) report_internal_error(what, e);
    }
};

// co_spawn(ex, awaitable<void>) with a ReportFailure completion handler.
template <class Executor, class Awaitable>
void spawn(Executor&& ex, Awaitable&& aw, const char* what) {
    boost::asio::co_spawn(std::forward<Executor>(ex), std::forward<Awaitable>(aw),
                          ReportFailure{what});
}

}  // namespace tunneld

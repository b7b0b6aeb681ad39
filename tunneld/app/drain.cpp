#include "tunneld/app/drain.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>

namespace tunneld {

namespace asio = boost::asio;

asio::awaitable<void> drain_connections(asio::io_context& io, ConnectionTable& table,
                                        Duration shutdown) {
    // Cancelled on `io` when the table empties, so it cannot fire before a wait starts.
    // Shared with the callback: a connection released after this returns must
    // not touch a timer that is gone.
    auto emptied = std::make_shared<asio::steady_timer>(io);
    table.on_empty([&io, emptied] { asio::post(io, [emptied] { emptied->cancel(); }); });
    auto wait = [&](std::chrono::steady_clock::duration limit) -> asio::awaitable<void> {
        if (table.size() == 0) co_return;
        emptied->expires_after(limit);
        co_await emptied->async_wait(asio::as_tuple(asio::use_awaitable));
    };
    auto deadline = std::chrono::steady_clock::now() + shutdown;
    spdlog::info("stopping: no new connections; draining {} live connection(s) for up to {}",
                 table.size(), format_duration(shutdown));
    co_await wait(std::min<Duration>(shutdown, std::chrono::seconds(1)));
    if (auto left = table.size()) {
        spdlog::info(
            "stopping: ending {} connection(s) gracefully: no more reading from the local side, "
            "what is in flight is delivered, then both ends see a clean close",
            left);
        table.quiesce_all();
    }
    co_await wait(deadline - std::chrono::steady_clock::now());
    if (auto left = table.size()) {
        spdlog::warn("stopping: closing {} connection(s) still open after {}", left,
                     format_duration(shutdown));
        table.close_all();
        co_await wait(std::chrono::seconds(5));
    }
    table.on_empty(nullptr);
}

}  // namespace tunneld

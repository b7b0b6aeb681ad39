#include "tunneld/net/listener.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "tunneld/error.hpp"

namespace tunneld {

namespace asio = boost::asio;
using asio::ip::tcp;

tcp::acceptor open_listener(asio::io_context& io, const Endpoint& ep, const std::string& what) {
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(ep.host, ec);
    if (ec)
        throw StartupError(what + ": '" + ep.host +
                           "' is not an IP address (listen addresses must be literal)");
    tcp::endpoint endpoint(addr, ep.port);
    tcp::acceptor acceptor(io);
    auto check = [&](const char* step) {
        if (ec)
            throw StartupError(
                what + ": cannot " + step + " " + ep.to_string() + ": " + ec.message() +
                (ec == asio::error::access_denied ? " (ports below 1024 need CAP_NET_BIND_SERVICE)"
                                                  : ""));
    };
    acceptor.open(endpoint.protocol(), ec);
    check("open");
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (addr.is_v6()) acceptor.set_option(asio::ip::v6_only(true), ec);
    acceptor.bind(endpoint, ec);
    check("listen on");
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
    check("listen on");
    return acceptor;
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, IoPool& pool,
                                  std::function<void(tcp::socket)> on_accept) {
    auto backoff = std::chrono::milliseconds(5);
    for (;;) {
        auto& io = pool.next();
        auto [ec, socket] = co_await acceptor.async_accept(io, asio::as_tuple(asio::use_awaitable));
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        if (ec) {
            spdlog::warn("accept on {}: {}; retrying in {} ms", acceptor.local_endpoint(ec).port(),
                         ec.message(), backoff.count());
            asio::steady_timer timer(acceptor.get_executor(), backoff);
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
            backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
            continue;
        }
        backoff = std::chrono::milliseconds(5);
        on_accept(std::move(socket));
    }
}

}  // namespace tunneld

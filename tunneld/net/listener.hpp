// Listening sockets and the accept loop shared by inbound and outbound.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>

#include "tunneld/config/endpoint.hpp"
#include "tunneld/net/io_pool.hpp"

namespace tunneld {

// Opens, binds and listens on `ep` (a literal address) with SO_REUSEADDR
// (IPV6_V6ONLY for IPv6, so [::] and 0.0.0.0 can both be listed). Throws
// StartupError naming `what` (e.g. "inbound.listen") and the system error.
boost::asio::ip::tcp::acceptor open_listener(boost::asio::io_context& io, const Endpoint& ep,
                                             const std::string& what);

// Accepts until the acceptor is closed, each connection onto the next worker
// io_context of `pool`, and hands the socket to `on_accept` (called on the
// acceptor's executor). Accept errors back off from 5 ms doubling to 1 s
// rather than spinning (EMFILE, ENOBUFS).
boost::asio::awaitable<void> accept_loop(
    boost::asio::ip::tcp::acceptor& acceptor, IoPool& pool,
    std::function<void(boost::asio::ip::tcp::socket)> on_accept);

}  // namespace tunneld

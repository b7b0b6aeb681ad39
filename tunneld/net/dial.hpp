// Outgoing connections with a deadline.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <string>

#include "tunneld/config/duration.hpp"
#include "tunneld/config/endpoint.hpp"

namespace tunneld {

// Resolves `ep` (a name or literal) and connects `socket` (on its own executor)
// to the first address that answers, all within `timeout`. Returns "" on
// success, otherwise what went wrong ("timed out after 10s", "Connection refused").
boost::asio::awaitable<std::string> dial(boost::asio::ip::tcp::socket& socket, const Endpoint& ep,
                                         Duration timeout);

// Connects a unix stream socket to `path` within `timeout`. Same return contract.
boost::asio::awaitable<std::string> dial(boost::asio::local::stream_protocol::socket& socket,
                                         const std::string& path, Duration timeout);

}  // namespace tunneld

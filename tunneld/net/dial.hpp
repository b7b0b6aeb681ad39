// Outgoing connections with a deadline.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <optional>
#include <string>

#include "tunneld/config/duration.hpp"
#include "tunneld/config/endpoint.hpp"
#include "tunneld/error.hpp"

namespace tunneld {

// Resolves `ep` (a name or literal) and connects `socket` (on its own executor)
// to the first address that answers, all within `timeout`. Fails with what
// went wrong ("timed out after 10s", "Connection refused", "cannot resolve ...").
// With `source`, the socket is bound to that address first (then `ep` must be
// a literal address of the same family).
boost::asio::awaitable<Result<void>> dial(boost::asio::ip::tcp::socket& socket, const Endpoint& ep,
                                          Duration timeout,
                                          std::optional<boost::asio::ip::address> source = {});

// Connects a unix stream socket to `path` within `timeout`. Same contract.
boost::asio::awaitable<Result<void>> dial(boost::asio::local::stream_protocol::socket& socket,
                                          const std::string& path, Duration timeout);

}  // namespace tunneld

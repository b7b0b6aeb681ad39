// Ending a node's relayed connections on SIGTERM without losing anything: a
// second for what ends by itself (a query finishing); then the rest,
// replication connections that never end by themselves, are ended gracefully:
// the plaintext side is no longer read, the half-close travels through both
// tunnels to postgres and back, so this takes a round trip, not
// timeouts.shutdown. Their clients reconnect and resume. Whatever is still
// open after `shutdown` is closed.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "tunneld/config/duration.hpp"
#include "tunneld/net/connection_table.hpp"

namespace tunneld {

// Runs on `io`; returns when the table is empty (or, after closing the rest,
// 5 s later at most). Waits on the table's on_empty notification, not by polling.
boost::asio::awaitable<void> drain_connections(boost::asio::io_context& io, ConnectionTable& table,
                                               Duration shutdown);

}  // namespace tunneld

// A route whose target is this node, or inbound.local / inbound.services.X.local:
// the local client straight to this node's backend, plaintext both ways, no TLS.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "tunneld/health/runtime.hpp"
#include "tunneld/net/conn_log.hpp"

namespace tunneld {

// Admits `local` (counted, tagged with info.route and this node's name), dials
// `backend` (inbound.backend or a service's; TCP or unix) under
// timeouts.connect, copies both ways with half-closes passed on, and logs and
// counts the close like any connection (reason=switched when the route closed
// it on a new primary).
boost::asio::awaitable<void> carry_to_own_backend(Runtime& rt, boost::asio::ip::tcp::socket local,
                                                  ConnInfo info, const Endpoint& backend);

}  // namespace tunneld

// Asks this node's Patroni whether it holds the leader lock: GET /leader on its
// REST API (health.patroni), 200 = yes, 503 = no (Patroni 2.1+, api.py). For
// routes with `leader: patroni` (route_choice.hpp), through the probe's pongs.
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "tunneld/config/duration.hpp"
#include "tunneld/config/endpoint.hpp"
#include "tunneld/health/backend_state.hpp"

namespace tunneld {

// Connect, request and answer all within `timeout`; any other status, a
// connection error or a timeout is "not answered" with the reason.
boost::asio::awaitable<PatroniLeader> ask_patroni_leader(boost::asio::any_io_executor ex,
                                                         const Endpoint& api, Duration timeout);

}  // namespace tunneld

// Patroni's REST API document for this node: the body Patroni serves on
// /patroni and on every health path (state, role, server_version, timeline,
// xlog, replication, database_system_identifier, ...), so monitoring made for
// Patroni reads tunneld's the same way. A pure function of a Snapshot.
#pragma once
#include <boost/json/object.hpp>

#include "tunneld/health/snapshot.hpp"

namespace tunneld {

// Patroni 3's role names: "master" for a primary, "replica", else "unknown".
boost::json::object patroni_document(const Snapshot& s);

// What the primary this standby streams from reports about its walsender for
// this node's tunnel (from that peer's last pong; net/connection_table.hpp
// tells the primary which walsender is whose), or nullptr when no reachable
// primary peer reports one.
const WalSender* upstream_walsender(const Snapshot& s);

}  // namespace tunneld

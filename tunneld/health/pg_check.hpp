// Asks the local postgres for its role and replication position with libpq's
// asynchronous API on an Asio executor, so a slow or hung postgres never
// blocks a thread. One connection is kept open between checks (no log line
// per check in postgres' log) and dropped after any failure or timeout.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <string>

#include "tunneld/config/duration.hpp"
#include "tunneld/health/backend_state.hpp"
#include "tunneld/health/libpq_ptr.hpp"

namespace tunneld {

// What to tell the operator when postgres took the connection and then refused
// it (libpq's one-line message): "health.postgres: role tunneld does not exist:
// ..." with the fix, rather than a "backend down" that sends them to the wrong place.
std::string server_refusal(const std::string& libpq_message);

class PostgresCheck {
  public:
    PostgresCheck(boost::asio::any_io_executor ex, std::string conninfo);

    // Connects if needed and runs the status query; everything (connect and
    // query) within `timeout`. Never throws: failures come back as up=false
    // with libpq's message or "timed out after 3s".
    boost::asio::awaitable<PostgresState> run(Duration timeout);

    // Closes the connection (next run() connects again).
    void reset() { conn_.reset(); }

  private:
    boost::asio::any_io_executor ex_;
    std::string conninfo_;
    PgConnPtr conn_;
};

}  // namespace tunneld

// routes[]: local plaintext listeners whose target follows the cluster. Each
// accepted connection goes where route_choice.hpp decides from the probes'
// pongs and this node's backend monitor: the primary, a replica, or a fixed
// peer; carry() (relay/pipeline.hpp) takes it from there. When the primary changes, connections a
// to: primary route made to the old one are closed at once (a walreceiver then reconnects to the
// new one); a split brain or no primary refuses new connections and closes nothing.
// Without a majority of the cluster's voters in reach (route/quorum.hpp) a to:
// primary route refuses (no_quorum) and closes its live connections as well.
#pragma once
#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "tunneld/health/route_view.hpp"
#include "tunneld/net/io_pool.hpp"
#include "tunneld/relay/context.hpp"
#include "tunneld/relay/pipeline.hpp"
#include "tunneld/route/route_choice.hpp"

namespace tunneld {

class RouteTable {
  public:
    // What the probes and the backend monitor know now: every peer in config
    // order, then this node when it can be a target (connection counts are
    // filled in here), and the cluster's voters with their reachability.
    // Called on `io`'s thread.
    struct Facts {
        std::vector<RouteCandidate> candidates;
        std::vector<VoterView> voters;
    };
    using Candidates = std::function<Facts()>;

    // Binds every routes[].local on `io`; throws StartupError when one cannot be bound.
    RouteTable(Context& ctx, const Config& cfg, boost::asio::io_context& io, IoPool& pool,
               Candidates candidates);
    ~RouteTable();

    void start();
    void stop();  // stops accepting; live connections go on
    // Something the decision reads has changed: decide again now (logs a
    // switch, closes connections to a primary that is no longer one). Thread-safe.
    void reevaluate();
    // For /status, /metrics and /health. Thread-safe.
    std::vector<RouteView> views() const;

  private:
    struct Route;
    struct Counted;
    static boost::asio::awaitable<void> carry_counted(Context& ctx, Near near, Far far,
                                                      ConnInfo info, Counted counted);
    void decide(Route& r, const char* trigger);
    // Closes every live connection `r` made (`choice.close_live`); how many. Under r.mutex.
    std::size_t close_all(Route& r, const RouteChoice& choice);
    void accept(Route& r, boost::asio::ip::tcp::socket s);

    Context& ctx_;
    const Config& cfg_;
    boost::asio::io_context& io_;
    IoPool& pool_;
    Candidates candidates_;
    std::vector<std::unique_ptr<Route>> routes_;
    std::mutex positions_mutex_;
    PrimaryPositions positions_;  // shared by every route: one history per primary
};

}  // namespace tunneld

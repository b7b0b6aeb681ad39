#include "tunneld/route/routes.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <map>
#include <mutex>

#include "tunneld/net/conn_log.hpp"
#include "tunneld/net/listener.hpp"
#include "tunneld/net/spawn.hpp"
#include "tunneld/relay/outbound.hpp"
#include "tunneld/relay/pipeline.hpp"
#include "tunneld/route/quorum.hpp"

namespace tunneld {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

struct RouteTable::Route {
    Route(const RouteConfig& c, tcp::acceptor a) : cfg(c), acceptor(std::move(a)) {}
    const RouteConfig& cfg;
    tcp::acceptor acceptor;
    std::map<std::string, std::unique_ptr<SessionSlot>> sessions;  // per peer, for resumption

    mutable std::mutex mutex;                 // the fields below
    std::map<std::string, std::size_t> live;  // target -> live connections
    RouteChoice last;                         // the latest decision
    bool decided = false;
    std::string current;   // where new connections go ("" = refusing)
    std::string previous;  // the last target there was (kept while refusing)
    std::string eligible;  // to: replica: the qualifying names, as last logged
    std::uint64_t refused = 0, switches = 0;
    std::optional<RouteSwitch> last_switch;
    std::optional<QuorumView> quorum;  // to: primary, at the latest decision
};

namespace {

std::string describe(const RouteConfig& c) { return c.name() + " (to " + c.target_text() + ")"; }

std::string eligible_names(const RouteChoice& c) {
    std::string out;
    for (const auto& v : c.candidates)
        if (v.eligible) out += (out.empty() ? "" : ", ") + v.name;
    return out;
}

std::string left_out(const RouteChoice& c) {
    std::string out;
    for (const auto& v : c.candidates)
        if (!v.eligible) out += (out.empty() ? "" : "; ") + v.name + " " + v.why_not;
    return out;
}

// What a refusal is about, without the details that change every probe round
// (timings, error texts): logged again only when this changes.
std::string refusal_key(const RouteChoice& c) {
    std::string key = c.refusal + (c.split_brain ? " split:" : " roles:");
    for (const auto& v : c.candidates) key += v.name + "=" + to_string(v.role) + ",";
    return key;
}

// The close reason of a refusal ("no_replica", "no_quorum", "no_primary").
CloseReason refusal_reason(const std::string& refusal) {
    if (refusal == "no_replica") return CloseReason::no_replica;
    if (refusal == "no_quorum") return CloseReason::no_quorum;
    return CloseReason::no_primary;
}

const CandidateView* find(const RouteChoice& c, const std::string& name) {
    for (const auto& v : c.candidates)
        if (v.name == name) return &v;
    return nullptr;
}

}  // namespace

// A route's count of live connections to `target`, given back however the
// connection ends.
struct RouteTable::Counted {
    Route* r;
    std::string target;
    Counted(Route* route, std::string t) : r(route), target(std::move(t)) {}
    Counted(Counted&& o) noexcept : r(std::exchange(o.r, nullptr)), target(std::move(o.target)) {}
    Counted(const Counted&) = delete;
    ~Counted() {
        if (!r) return;
        std::lock_guard lock(r->mutex);
        if (--r->live[target] == 0) r->live.erase(target);
    }
};

asio::awaitable<void> RouteTable::carry_counted(Context& ctx, Near near, Far far, ConnInfo info,
                                                Counted counted) {
    co_await carry(ctx, std::move(near), std::move(far), std::move(info));
}

RouteTable::RouteTable(Context& ctx, const Config& cfg, asio::io_context& io, IoPool& pool,
                       Candidates candidates)
    : ctx_(ctx), cfg_(cfg), io_(io), pool_(pool), candidates_(std::move(candidates)) {
    for (const auto& route : cfg.routes) {
        auto r = std::make_unique<Route>(
            route, open_listener(io, route.local, "routes[" + route.name() + "].local"));
        for (const auto& p : cfg.peers) r->sessions[p.name] = std::make_unique<SessionSlot>();
        routes_.push_back(std::move(r));
    }
}

RouteTable::~RouteTable() = default;

void RouteTable::start() {
    for (auto& route : routes_) {
        Route* r = route.get();
        spdlog::info("route: {} -> {}", r->cfg.name(),
                     r->cfg.to == RouteConfig::To::peer ? "peer " + r->cfg.peer
                                                        : "the " + r->cfg.target_text());
        spawn(
            io_,
            accept_loop(r->acceptor, pool_, [this, r](tcp::socket s) { accept(*r, std::move(s)); }),
            "a route's accept loop");
    }
}

void RouteTable::stop() {
    for (auto& r : routes_) {
        error_code ignored;
        r->acceptor.close(ignored);
    }
}

void RouteTable::reevaluate() {
    asio::post(io_, [this] {
        for (auto& r : routes_) decide(*r, "a probe or backend result");
    });
}

void RouteTable::decide(Route& r, const char* trigger) {
    auto facts = candidates_();
    auto& candidates = facts.candidates;
    std::optional<QuorumView> quorum;
    if (r.cfg.to == RouteConfig::To::primary)
        quorum = quorum_of(std::move(facts.voters),
                           cfg_.cluster.quorum == ClusterConfig::Quorum::majority);
    {
        std::lock_guard hold(positions_mutex_);
        positions_.record(candidates);
        positions_.attach(candidates);
    }
    std::unique_lock lock(r.mutex);
    for (auto& c : candidates)
        if (auto it = r.live.find(c.name); it != r.live.end()) c.connections = it->second;
    auto choice = choose_route(r.cfg, candidates, quorum ? &*quorum : nullptr);
    r.quorum = std::move(quorum);
    std::string target = choice.target.value_or("");
    // Until every candidate has a first result there is nothing to log yet
    // (to: primary refuses meanwhile: an unheard node could be a second primary).
    bool settling = std::any_of(candidates.begin(), candidates.end(),
                                [](const RouteCandidate& c) { return !c.known; });
    if (settling && !r.decided) {
        r.current = target;
        r.last = std::move(choice);
        return;
    }
    bool first = !r.decided;
    r.decided = true;

    if (r.cfg.to == RouteConfig::To::replica) {
        auto names = eligible_names(choice);
        if (first || names != r.eligible) {
            if (names.empty())
                spdlog::warn("route {}: refusing new connections (no_replica): {}", describe(r.cfg),
                             choice.detail);
            else
                spdlog::info("route {}: candidates {}{}{}", describe(r.cfg), names,
                             left_out(choice).empty() ? "" : "; left out: ", left_out(choice));
            r.eligible = names;
        }
        r.current = target;
        r.last = std::move(choice);
        return;
    }

    if (target != r.current || first) {
        // `from`: where the route last sent connections, across a refusing spell.
        std::string from = r.current.empty() ? r.previous : r.current;
        std::string cause;
        std::size_t closed = 0;
        if (!target.empty()) {
            cause = r.cfg.to == RouteConfig::To::peer ? "fixed peer"
                    : r.cfg.leader == RouteConfig::Leader::patroni
                        ? target + " holds Patroni's leader lock and reports primary"
                        : target + " reports primary";
            const auto* was = from.empty() || from == target ? nullptr : find(choice, from);
            if (was)
                cause += "; " + from + " " +
                         (was->why_not.empty() ? "no longer qualifies" : was->why_not);
            // A new primary: every connection this route made elsewhere goes now,
            // so a walreceiver stuck on a dead path reconnects at once.
            if (r.cfg.to == RouteConfig::To::primary)
                for (const auto& [name, n] : r.live)
                    if (name != target)
                        closed += ctx_.connections.close_routed(r.cfg.name(), name,
                                                                "the primary is now " + target);
            if (first || from.empty() || from == target)
                spdlog::info("route {}: new connections go to {} ({})", describe(r.cfg), target,
                             cause);
            else
                spdlog::warn("route {}: switched {} -> {} ({}, on {}); closed {} connection(s)",
                             describe(r.cfg), from, target, cause, trigger, closed);
            r.previous = target;
        } else {
            cause = choice.detail;
            // A node that now reports recovery is no longer the primary: its
            // connections go. So do all of them without a quorum, or when the
            // primary was promoted over: a session left open on the minority
            // side would go on writing what the rewind discards. A split brain
            // or an unreachable primary with a quorum in reach closes nothing.
            const auto* was = r.current.empty() ? nullptr : find(choice, r.current);
            if (choice.close_live) {
                closed = close_all(r, choice);
            } else if (was && was->role == RouteRole::replica) {
                closed = ctx_.connections.close_routed(r.cfg.name(), r.current,
                                                       r.current + " is in recovery now");
            }
            spdlog::warn("route {}: refusing new connections ({}): {}{}", describe(r.cfg),
                         choice.refusal, choice.detail,
                         r.current.empty() ? ""
                                           : "; was " + r.current + ", closed " +
                                                 std::to_string(closed) + " connection(s)");
        }
        if (!first) {
            ++r.switches;
            r.last_switch = RouteSwitch{unix_now(), from, target, cause};
        } else if (!target.empty()) {
            r.last_switch = RouteSwitch{unix_now(), "", target, cause};
        }
        r.current = target;
    } else if (target.empty()) {
        // Refusing already (a split brain, say) and now without a quorum too:
        // what is still open from before goes as well.
        std::size_t closed = 0;
        if (choice.close_live && choice.refusal != r.last.refusal) closed = close_all(r, choice);
        if (refusal_key(choice) != refusal_key(r.last) || closed)
            spdlog::warn("route {}: still refusing ({}): {}{}", describe(r.cfg), choice.refusal,
                         choice.detail,
                         closed ? "; closed " + std::to_string(closed) + " connection(s)" : "");
    }
    r.last = std::move(choice);
}

std::size_t RouteTable::close_all(Route& r, const RouteChoice& choice) {
    // A route without a quorum closes as no_quorum; one whose primary was
    // promoted over as switched (the primary changed, only not to one in sight).
    auto reason = choice.refusal == "no_quorum" ? CloseReason::no_quorum : CloseReason::switched;
    std::size_t closed = 0;
    for (const auto& [name, n] : r.live)
        closed += ctx_.connections.close_routed(r.cfg.name(), name, choice.detail, reason);
    return closed;
}

void RouteTable::accept(Route& r, tcp::socket s) {
    decide(r, "a new connection");
    auto info = accepted_local(ctx_, s);
    info.route = r.cfg.name();
    std::string target;
    bool self = false;
    {
        std::lock_guard lock(r.mutex);
        target = r.last.target.value_or("");
        self = r.last.target_is_self;
        if (target.empty()) {
            ++r.refused;
        } else {
            ++r.live[target];
        }
    }
    if (target.empty()) {
        auto reason = refusal_reason(r.last.refusal);
        info.direction = "outbound";
        ctx_.stats.count_close(Direction::outbound, reason);
        // One line per route per 10 s at most: a client retrying in a loop
        // cannot flood the log while there is no primary.
        if (auto n = ctx_.refusals.note("route " + r.cfg.name()))
            log_route_refusal(info, reason, r.last.detail, n);
        return;  // the socket closes here; postgres retries by itself
    }
    auto ex = s.get_executor();
    Far far;
    if (self) {
        far = own_far(cfg_.inbound->backend);
    } else {
        for (const auto& p : cfg_.peers)
            if (p.name == target) far = peer_far(p, "", *r.sessions.at(target));
    }
    spawn(ex,
          carry_counted(ctx_, Near{std::move(s)}, std::move(far), std::move(info),
                        Counted{&r, target}),
          "a route's connection");
}

std::vector<RouteView> RouteTable::views() const {
    std::vector<RouteView> out;
    for (const auto& r : routes_) {
        std::lock_guard lock(r->mutex);
        RouteView v;
        v.name = r->cfg.name();
        v.to = r->cfg.target_text();
        if (r->cfg.to == RouteConfig::To::primary)
            v.leader = r->cfg.leader == RouteConfig::Leader::patroni ? "patroni" : "postgres";
        v.target = r->current;
        v.split_brain = r->last.split_brain;
        v.refusal = r->last.refusal;
        v.detail = r->last.detail;
        v.candidates = r->last.candidates;
        for (auto& c : v.candidates) {
            auto it = r->live.find(c.name);
            c.connections = it == r->live.end() ? 0 : it->second;
        }
        for (const auto& [name, n] : r->live) v.connections += n;
        v.refused = r->refused;
        v.switches = r->switches;
        v.last_switch = r->last_switch;
        v.quorum = r->quorum;
        out.push_back(std::move(v));
    }
    return out;
}

}  // namespace tunneld

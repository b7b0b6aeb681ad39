#include "tunneld/app/snapshot_builder.hpp"

#include <unistd.h>

#include "tunneld/error.hpp"
#include "tunneld/health/backend_monitor.hpp"
#include "tunneld/net/spawn.hpp"
#include "tunneld/tls/stream.hpp"

namespace tunneld {

namespace {

std::int64_t unix_seconds(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

void add_counters(Snapshot& s, const Stats& stats) {
    for (const auto& [key, t] : stats.all_traffic()) {
        TrafficView v{key.direction,
                      key.peer,
                      key.service,
                      t->active.load(),
                      t->opened.load(),
                      t->bytes.from_tls.load(),
                      t->bytes.to_tls.load(),
                      t->last_handshake.load(),
                      {},
                      0};
        std::tie(v.last_error, v.last_error_at) = t->last_error();
        s.traffic.push_back(std::move(v));
    }
    for (auto dir : {Direction::inbound, Direction::outbound}) {
        for (std::size_t i = 0; i < kHandshakeFailureCount; ++i) {
            auto f = static_cast<HandshakeFailure>(i);
            s.handshakes[{dir, f == HandshakeFailure::none ? "ok" : to_string(f)}] =
                stats.handshakes(dir, f);
        }
        for (std::size_t i = 0; i < kCloseReasonCount; ++i) {
            auto r = static_cast<CloseReason>(i);
            s.closes[{dir, to_string(r)}] = stats.closes(dir, r);
        }
    }
    s.key_exchanges = stats.key_exchanges();
}

void add_firewall(Snapshot& s, const Config& cfg, const firewall::Keeper& keeper, bool full) {
    if (!keeper.enabled()) return;
    auto st = keeper.status();
    s.firewall.enabled = true;
    s.firewall.table = cfg.firewall->table;
    s.firewall.applied = st.applied;
    s.firewall.error = st.error;
    s.firewall.repairs = st.repairs;
    s.firewall.missing = st.missing;
    s.firewall.resolve_failures = st.resolve_failures;
    if (!full) return;
    try {
        for (const auto& [port, d] : firewall::read_drop_counters(cfg.firewall->table))
            s.firewall.drops[port] = {d.packets, d.bytes};
    } catch (const StartupError& e) {
        s.firewall.error = std::string("cannot read the drop counters: ") + e.what();
    }
}

}  // namespace

Snapshot build_snapshot(const SnapshotSources& src, const NodeFlags& flags, bool full) {
    const auto& cfg = src.config;
    Snapshot s;
    s.node = cfg.node;
    s.version = TUNNELD_VERSION;
    s.now = unix_now();
    s.started_at = src.started_at;
    s.pid = ::getpid();
    s.workers_alive = flags.workers_alive;
    s.stopping = flags.stopping;
    s.listeners_up = flags.listeners_up;
    auto m = src.ctx.tls.load();
    s.cert_serial = m->serial_hex;
    s.cert_not_after = unix_seconds(m->not_after);
    s.reloads = src.ctx.stats.reloads();
    s.key_updates = key_updates_sent();
    s.internal_errors = internal_errors();
    if (cfg.inbound) {
        for (const auto& l : cfg.inbound->listen) s.inbound_listen.push_back(l.to_string());
        s.inbound_backend = cfg.inbound->backend.to_string();
        for (const auto& sc : cfg.inbound->services)
            s.services.push_back(
                ServiceView{sc.name, service_alpn(sc.name), sc.backend.to_string(), sc.allow});
    }
    for (const auto& p : src.probes) {
        PeerView v{p->peer().name,
                   p->peer().connect.to_string(),
                   p->peer().has_local() ? p->peer().local.to_string() : "",
                   p->state(),
                   {}};
        for (const auto& ps : p->peer().services)
            v.services.emplace_back(ps.name, ps.local.to_string());
        s.peers.push_back(std::move(v));
    }
    if (src.routes) s.routes = src.routes();
    add_counters(s, src.ctx.stats);
    add_firewall(s, cfg, src.keeper, full);
    s.backend_checked_by_config = BackendMonitor::wanted(cfg);
    s.postgres_configured = !cfg.health.postgres.empty();
    s.backend = src.backend.get();
    s.tags = cfg.health.tags;
    return s;
}

std::vector<RouteCandidate> route_candidates(
    const Config& cfg, const Latest<BackendState>& backend,
    const std::vector<std::unique_ptr<PeerProbe>>& probes) {
    std::vector<RouteCandidate> out;
    for (const auto& p : probes) {
        auto st = p->state();
        RouteCandidate c;
        c.name = p->peer().name;
        c.known = st.probed;
        c.reachable = st.up;
        c.unreachable_why = st.probed ? st.last_error : "not probed yet";
        if (st.up && st.peer_backend) {
            c.postgres = st.peer_backend->postgres;
            c.sampled_ms = st.peer_backend->sampled_ms;
            c.patroni = st.peer_backend->patroni;
        }
        out.push_back(std::move(c));
    }
    if (cfg.inbound && !cfg.health.postgres.empty()) {
        auto b = backend.get();
        RouteCandidate c;
        c.name = cfg.node;
        c.self = true;
        c.known = b.checked;
        c.reachable = b.checked && b.reachable;
        c.unreachable_why = b.checked ? b.error : "not checked yet";
        c.postgres = b.postgres;
        c.sampled_ms = b.sampled_ms;
        c.patroni = b.patroni;
        out.push_back(std::move(c));
    }
    return out;
}

std::vector<VoterView> cluster_voters(const Config& cfg, const Context& ctx,
                                      const std::vector<std::unique_ptr<PeerProbe>>& probes) {
    auto window =
        std::max<Duration>(3 * cfg.health.probe_interval, std::chrono::milliseconds(1500));
    auto now = HeardPeers::Clock::now();
    std::vector<VoterView> out;
    for (const auto& name : cfg.voters()) {
        VoterView v;
        v.name = name;
        v.witness = cfg.cluster.is_witness(name);
        v.self = name == cfg.node;
        if (v.self) {
            v.reachable = true;
            out.push_back(std::move(v));
            continue;
        }
        const PeerProbe* probe = nullptr;
        for (const auto& p : probes)
            if (p->peer().name == name) probe = p.get();
        if (probe) {
            auto st = probe->state();
            v.reachable = st.up;
            v.why = !st.probed ? "not probed yet" : st.up ? "" : st.last_error;
        }
        if (v.witness && !v.reachable) {
            auto last = ctx.heard.last(name);
            if (last && now - *last <= window) {
                v.reachable = true;
                v.why.clear();
            } else {
                auto heard =
                    !last ? std::string("no probe ping from it yet")
                          : "no probe ping from it for " +
                                format_duration(std::chrono::duration_cast<Duration>(now - *last));
                v.why = v.why.empty() ? heard : v.why + "; " + heard;
            }
        }
        out.push_back(std::move(v));
    }
    return out;
}

std::string node_summary(const Config& cfg, const TlsMaterial& m) {
    return "node " + cfg.node + ", " +
           (cfg.inbound ? "inbound on " + cfg.inbound->listen.front().to_string() + ", " : "") +
           std::to_string(cfg.peers.size()) + " peer(s), " +
           (cfg.routes.empty() ? "" : std::to_string(cfg.routes.size()) + " route(s), ") +
           "cert serial " + m.serial_hex + " (" + std::to_string(m.days_left()) + " days left)";
}

}  // namespace tunneld

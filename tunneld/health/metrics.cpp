#include <algorithm>
#include <cmath>
#include <sstream>

#include "tunneld/health/facts.hpp"
#include "tunneld/health/patroni.hpp"
#include "tunneld/health/routes.hpp"

namespace tunneld {

using namespace facts;

namespace {

// ---------------------------------------------------------------- metrics

std::string escape_label(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

std::string number(double v) {
    if (std::isnan(v)) return "NaN";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
    std::ostringstream o;
    o.precision(9);
    o << v;
    return o.str();
}

class MetricWriter;
void write_walsenders(MetricWriter& m, const PostgresState& pg);

class MetricWriter {
  public:
    using Labels = std::vector<std::pair<std::string, std::string>>;
    void family(const std::string& name, const char* type, const char* help) {
        out_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
    }
    void sample(const std::string& name, const Labels& labels, double value) {
        out_ << name;
        if (!labels.empty()) {
            out_ << '{';
            for (std::size_t i = 0; i < labels.size(); ++i)
                out_ << (i ? "," : "") << labels[i].first << "=\"" << escape_label(labels[i].second)
                     << '"';
            out_ << '}';
        }
        out_ << ' ' << number(value) << '\n';
    }
    // A family with one sample.
    void single(const std::string& name, const char* type, const char* help, double value,
                const Labels& labels = {}) {
        family(name, type, help);
        sample(name, labels, value);
    }
    std::string str() const { return out_.str(); }

  private:
    std::ostringstream out_;
};

// This node's walsenders by the peer identity whose tunnel carries each
// ("" when not known: a unix-socket backend, or a client not through tunneld).
void write_walsenders(MetricWriter& m, const PostgresState& pg) {
    auto labels = [](const WalSender& w) -> MetricWriter::Labels {
        return {{"peer", w.peer}, {"application_name", w.application_name}};
    };
    m.family("tunneld_replication_walsender", "gauge",
             "1 per walsender of the local postgres, by peer, state and sync_state "
             "(pg_stat_replication).");
    for (const auto& w : pg.walsenders) {
        auto l = labels(w);
        l.emplace_back("state", w.state);
        l.emplace_back("sync_state", w.sync_state);
        m.sample("tunneld_replication_walsender", l, 1);
    }
    m.family("tunneld_replication_lag_bytes", "gauge",
             "WAL bytes a standby's walsender is behind this node's position, by kind (sent, "
             "write, flush, replay).");
    for (const auto& w : pg.walsenders)
        for (auto [kind, lsn] :
             {std::pair{"sent", &w.sent_lsn}, std::pair{"write", &w.write_lsn},
              std::pair{"flush", &w.flush_lsn}, std::pair{"replay", &w.replay_lsn}})
            if (auto v = walsender_lag_bytes(pg, *lsn)) {
                auto l = labels(w);
                l.emplace_back("kind", kind);
                m.sample("tunneld_replication_lag_bytes", l, static_cast<double>(*v));
            }
    m.family("tunneld_replication_lag_seconds", "gauge",
             "pg_stat_replication's write_lag, flush_lag and replay_lag of a standby, by kind "
             "(absent while postgres reports NULL: idle, or not yet measured).");
    for (const auto& w : pg.walsenders)
        for (auto [kind, v] : {std::pair{"write", w.write_lag}, std::pair{"flush", w.flush_lag},
                               std::pair{"replay", w.replay_lag}})
            if (v >= 0) {
                auto l = labels(w);
                l.emplace_back("kind", kind);
                m.sample("tunneld_replication_lag_seconds", l, v);
            }
}

}  // namespace

std::string render_metrics(const Snapshot& s) {
    MetricWriter m;
    m.single("tunneld_build_info", "gauge", "Version of the running tunneld.", 1,
             {{"version", s.version}, {"node", s.node}});
    m.single("tunneld_start_time_seconds", "gauge", "Unix time the daemon started.",
             static_cast<double>(s.started_at));
    m.single("tunneld_ready", "gauge", "1 when /readiness answers 200.",
             readiness_problems(s, false).empty() ? 1 : 0);
    m.single("tunneld_event_loops_alive", "gauge",
             "1 when every I/O thread answered its heartbeat.", s.workers_alive ? 1 : 0);

    m.single("tunneld_certificate_expiry_timestamp_seconds", "gauge",
             "notAfter of this node's certificate (unix time).",
             static_cast<double>(s.cert_not_after), {{"serial", s.cert_serial}});
    m.single("tunneld_certificate_expiry_seconds", "gauge",
             "Seconds until this node's certificate expires.",
             static_cast<double>(s.cert_not_after - s.now));
    m.family("tunneld_reloads_total", "counter", "Reloads of the TLS material, by result.");
    m.sample("tunneld_reloads_total", {{"result", "ok"}}, static_cast<double>(s.reloads.ok));
    m.sample("tunneld_reloads_total", {{"result", "failed"}},
             static_cast<double>(s.reloads.failed));
    m.single("tunneld_tls_key_updates_total", "counter",
             "TLS 1.3 KeyUpdates sent on long connections (tls.rekey_bytes, tls.rekey_interval).",
             static_cast<double>(s.key_updates));
    m.single("tunneld_last_reload_failed", "gauge",
             "1 when the last reload failed (the previous material is in use).",
             s.reloads.last_error.empty() ? 0 : 1);

    m.family("tunneld_connections", "gauge",
             "Relayed connections open now, by peer, direction and service.");
    for (const auto& t : s.traffic)
        m.sample("tunneld_connections",
                 {{"peer", t.peer}, {"direction", to_string(t.direction)}, {"service", t.service}},
                 static_cast<double>(t.active));
    m.family("tunneld_connections_total", "counter",
             "Relayed connections opened, by peer, direction and service.");
    for (const auto& t : s.traffic)
        m.sample("tunneld_connections_total",
                 {{"peer", t.peer}, {"direction", to_string(t.direction)}, {"service", t.service}},
                 static_cast<double>(t.opened));
    m.family("tunneld_received_bytes_total", "counter",
             "Bytes received from the peer over TLS, by peer, direction and service.");
    for (const auto& t : s.traffic)
        m.sample("tunneld_received_bytes_total",
                 {{"peer", t.peer}, {"direction", to_string(t.direction)}, {"service", t.service}},
                 static_cast<double>(t.received));
    m.family("tunneld_sent_bytes_total", "counter",
             "Bytes sent to the peer over TLS, by peer, direction and service.");
    for (const auto& t : s.traffic)
        m.sample("tunneld_sent_bytes_total",
                 {{"peer", t.peer}, {"direction", to_string(t.direction)}, {"service", t.service}},
                 static_cast<double>(t.sent));
    m.family("tunneld_handshakes_total", "counter",
             "Finished TLS handshakes, by direction and reason (ok or the failure).");
    for (const auto& [key, n] : s.handshakes)
        m.sample("tunneld_handshakes_total",
                 {{"direction", to_string(key.first)}, {"reason", key.second}},
                 static_cast<double>(n));
    m.family("tunneld_tls_key_exchanges_total", "counter",
             "Successful TLS handshakes, by direction and the key-exchange group agreed "
             "(X25519MLKEM768 is post-quantum).");
    for (const auto& [key, n] : s.key_exchanges)
        m.sample("tunneld_tls_key_exchanges_total",
                 {{"direction", to_string(key.first)}, {"group", key.second}},
                 static_cast<double>(n));
    m.family("tunneld_connection_closes_total", "counter",
             "Relayed connections that ended, by direction and reason.");
    for (const auto& [key, n] : s.closes)
        m.sample("tunneld_connection_closes_total",
                 {{"direction", to_string(key.first)}, {"reason", key.second}},
                 static_cast<double>(n));

    m.family("tunneld_peer_up", "gauge", "1 when the peer probe is answered.");
    for (const auto& p : s.peers)
        m.sample("tunneld_peer_up", {{"peer", p.name}}, p.probe.up ? 1 : 0);
    m.family("tunneld_peer_backend_up", "gauge",
             "1 when the peer reports its backend accepting connections.");
    for (const auto& p : s.peers)
        m.sample("tunneld_peer_backend_up", {{"peer", p.name}},
                 backend_word(p.probe.peer_backend) == "up" ? 1 : 0);
    m.family("tunneld_peer_service_up", "gauge",
             "1 when the peer reports the backend of a service (peers[].services) accepting "
             "connections; 0 when it does not, or does not serve it.");
    for (const auto& p : s.peers)
        for (const auto& [name, local] : p.services) {
            bool up = false;
            if (p.probe.up && p.probe.peer_backend)
                for (const auto& sv : p.probe.peer_backend->services)
                    up = up || (sv.name == name && sv.reachable);
            m.sample("tunneld_peer_service_up", {{"peer", p.name}, {"service", name}}, up ? 1 : 0);
        }
    m.family("tunneld_peer_rtt_seconds", "gauge",
             "Probe round-trip time to the peer (smoothed, RFC 6298).");
    for (const auto& p : s.peers)
        m.sample("tunneld_peer_rtt_seconds", {{"peer", p.name}}, p.probe.rtt_smoothed_ms / 1000);
    m.family("tunneld_peer_rtt_min_seconds", "gauge",
             "Smallest probe round-trip time to the peer seen.");
    for (const auto& p : s.peers)
        m.sample("tunneld_peer_rtt_min_seconds", {{"peer", p.name}}, p.probe.rtt_min_ms / 1000);
    m.family("tunneld_peer_probe_failures_total", "counter",
             "Probe attempts or connections that ended with the peer down.");
    for (const auto& p : s.peers)
        m.sample("tunneld_peer_probe_failures_total", {{"peer", p.name}},
                 static_cast<double>(p.probe.failures));

    m.single("tunneld_internal_errors_total", "counter",
             "Exceptions that escaped a task (logged; that task ended, the daemon went on).",
             static_cast<double>(s.internal_errors));
    if (s.firewall.enabled) {
        m.single("tunneld_firewall_applied", "gauge",
                 "1 when the nftables guard is in place as configured.", s.firewall.applied ? 1 : 0,
                 {{"table", s.firewall.table}});
        m.single("tunneld_firewall_repairs_total", "counter",
                 "Times the guard table was put back after an outside change.",
                 static_cast<double>(s.firewall.repairs));
        m.single("tunneld_firewall_missing_total", "counter",
                 "Times the guard table was found deleted from outside (flush ruleset); "
                 "tunneld_firewall_applied is 0 until it is back.",
                 static_cast<double>(s.firewall.missing));
        m.single("tunneld_firewall_resolve_failures_total", "counter",
                 "Peer name lookups that failed; the peer kept its last known addresses.",
                 static_cast<double>(s.firewall.resolve_failures));
        m.family("tunneld_firewall_dropped_packets_total", "counter",
                 "Packets to a protected port dropped by the guard.");
        for (const auto& [port, d] : s.firewall.drops)
            m.sample("tunneld_firewall_dropped_packets_total", {{"port", std::to_string(port)}},
                     static_cast<double>(d.packets));
        m.family("tunneld_firewall_dropped_bytes_total", "counter",
                 "Bytes to a protected port dropped by the guard.");
        for (const auto& [port, d] : s.firewall.drops)
            m.sample("tunneld_firewall_dropped_bytes_total", {{"port", std::to_string(port)}},
                     static_cast<double>(d.bytes));
    }
    if (s.backend_checked_by_config)
        m.single("tunneld_backend_up", "gauge", "1 when the local backend accepts connections.",
                 s.backend.checked && s.backend.reachable ? 1 : 0);
    if (!s.services.empty()) {
        m.family("tunneld_service_backend_up", "gauge",
                 "1 when the backend of an inbound.services entry accepts connections.");
        for (const auto& sv : s.services) {
            bool up = false;
            for (const auto& b : s.backend.services) up = up || (b.name == sv.name && b.reachable);
            m.sample("tunneld_service_backend_up", {{"service", sv.name}}, up ? 1 : 0);
        }
    }
    if (s.postgres_configured) {
        auto* pg = local_postgres(s);
        m.single("tunneld_postgres_up", "gauge",
                 "1 when the local postgres answers the status query.", pg ? 1 : 0);
        m.single("tunneld_postgres_in_recovery", "gauge", "1 when the local postgres is a standby.",
                 pg && pg->in_recovery ? 1 : 0);
        if (auto lag = replication_lag_bytes(s)) {
            m.single("tunneld_postgres_replication_lag_bytes", "gauge",
                     "WAL bytes this standby has not replayed yet (newest known primary position - "
                     "replay).",
                     static_cast<double>(*lag));
            m.single("tunneld_postgres_replication_lag_seconds", "gauge",
                     "Age of the last replayed transaction while replay is behind, else 0.",
                     pg->replay_delay_seconds);
        }
        if (pg && pg->in_recovery)
            if (const auto* w = upstream_walsender(s))
                m.single("tunneld_postgres_sync_standby", "gauge",
                         "1 while the primary lists this standby's walsender as sync or quorum "
                         "(its pg_stat_replication.sync_state), 0 while async or potential.",
                         w->synchronous() ? 1 : 0, {{"sync_state", w->sync_state}});
        if (pg && !pg->walsenders.empty()) write_walsenders(m, *pg);
    }
    if (!s.routes.empty()) {
        m.family("tunneld_route_target", "gauge",
                 "1 for the node a route sends new connections to, 0 for its other candidates.");
        for (const auto& r : s.routes)
            for (const auto& c : r.candidates)
                m.sample("tunneld_route_target",
                         {{"route", r.name}, {"to", r.to}, {"target", c.name}},
                         r.target == c.name ? 1 : 0);
        m.family("tunneld_route_candidates", "gauge",
                 "Reachable nodes of a route by the role their postgres reports.");
        for (const auto& r : s.routes)
            for (auto role : {RouteRole::primary, RouteRole::replica, RouteRole::unknown}) {
                auto n = std::count_if(r.candidates.begin(), r.candidates.end(),
                                       [&](const CandidateView& c) { return c.role == role; });
                m.sample("tunneld_route_candidates", {{"route", r.name}, {"role", to_string(role)}},
                         static_cast<double>(n));
            }
        m.family("tunneld_route_has_target", "gauge",
                 "1 while a route has a node to send new connections to, 0 while it refuses "
                 "(no_primary, no_replica, no_quorum).");
        for (const auto& r : s.routes)
            m.sample("tunneld_route_has_target", {{"route", r.name}, {"to", r.to}},
                     r.target.empty() ? 0 : 1);
        m.family("tunneld_route_split_brain", "gauge",
                 "1 while more than one node reports primary (the route refuses).");
        for (const auto& r : s.routes)
            m.sample("tunneld_route_split_brain", {{"route", r.name}}, r.split_brain ? 1 : 0);
        m.family("tunneld_route_quorum", "gauge",
                 "1 while a to: primary route reaches a strict majority of the cluster's voters "
                 "(or cluster.quorum is none), 0 while it refuses for want of one (no_quorum).");
        for (const auto& r : s.routes)
            if (r.quorum)
                m.sample("tunneld_route_quorum", {{"route", r.name}}, r.quorum->met ? 1 : 0);
        m.family("tunneld_route_voters", "gauge",
                 "The cluster's voters as a to: primary route sees them: all, and reachable.");
        for (const auto& r : s.routes)
            if (r.quorum) {
                m.sample("tunneld_route_voters", {{"route", r.name}, {"state", "all"}},
                         static_cast<double>(r.quorum->voters));
                m.sample("tunneld_route_voters", {{"route", r.name}, {"state", "reachable"}},
                         static_cast<double>(r.quorum->reached));
            }
        m.family("tunneld_route_connections", "gauge", "Live connections through a route.");
        for (const auto& r : s.routes)
            m.sample("tunneld_route_connections", {{"route", r.name}},
                     static_cast<double>(r.connections));
        m.family("tunneld_route_refused_total", "counter",
                 "Connections a route refused (no_primary, no_replica, no_quorum).");
        for (const auto& r : s.routes)
            m.sample("tunneld_route_refused_total", {{"route", r.name}},
                     static_cast<double>(r.refused));
        m.family("tunneld_route_switches_total", "counter", "Times a route's target changed.");
        for (const auto& r : s.routes)
            m.sample("tunneld_route_switches_total", {{"route", r.name}},
                     static_cast<double>(r.switches));
    }
    return m.str();
}

}  // namespace tunneld

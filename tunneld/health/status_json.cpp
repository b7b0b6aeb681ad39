#include <boost/json.hpp>

#include "tunneld/health/facts.hpp"
#include "tunneld/health/patroni.hpp"
#include "tunneld/health/routes.hpp"

namespace tunneld {

namespace json = boost::json;
using namespace facts;

std::string render_status(const Snapshot& s) {
    auto problems = readiness_problems(s, false);
    json::array prob;
    for (const auto& p : problems) prob.emplace_back(p);
    auto reloads = json::object{{"ok", s.reloads.ok},
                                {"failed", s.reloads.failed},
                                {"last_at", s.reloads.last_at},
                                {"last_error", s.reloads.last_error}};
    json::object tls{{"cert_serial", s.cert_serial},
                     {"not_after", s.cert_not_after},
                     {"seconds_left", s.cert_not_after - s.now},
                     {"days_left", (s.cert_not_after - s.now) / 86400},
                     {"reloads", std::move(reloads)},
                     {"key_updates", s.key_updates}};

    auto handshakes = [&](Direction d) {
        json::object failed;
        std::uint64_t ok = 0;
        for (const auto& [key, n] : s.handshakes) {
            if (key.first != d || n == 0) continue;
            if (key.second == "ok")
                ok = n;
            else
                failed[key.second] = n;
        }
        return json::object{{"ok", ok}, {"failed", std::move(failed)}};
    };
    auto traffic_of = [&](Direction d, const std::string& peer,
                          const std::string& service = "postgresql") -> const TrafficView* {
        for (const auto& t : s.traffic)
            if (t.direction == d && t.peer == peer && t.service == service) return &t;
        return nullptr;
    };
    auto traffic_json = [](const TrafficView* t) {
        if (!t)
            return json::object{
                {"active", 0}, {"opened", 0}, {"bytes_received", 0}, {"bytes_sent", 0}};
        return json::object{{"active", t->active},
                            {"opened", t->opened},
                            {"bytes_received", t->received},
                            {"bytes_sent", t->sent}};
    };

    json::array peers;
    for (const auto& p : s.peers) {
        const auto& pr = p.probe;
        auto* t = traffic_of(Direction::outbound, p.name);
        std::string last_error = pr.up ? "" : pr.last_error;
        if (last_error.empty() && t) last_error = t->last_error;
        json::object peer{
            {"name", p.name},
            {"connect", p.connect},
            {"local", p.local},
            {"state", peer_state(pr)},
            {"summary", peer_summary(p, s.now)},
            {"since", pr.since},
            {"address", pr.address},
            {"rtt_ms", json::object{{"last", pr.rtt_last_ms},
                                    {"min", pr.rtt_min_ms},
                                    {"smoothed", pr.rtt_smoothed_ms}}},
            {"last_handshake", std::max(pr.last_handshake, t ? t->last_handshake : 0)},
            {"last_error", last_error},
            {"probe",
             json::object{{"pings", pr.pings}, {"pongs", pr.pongs}, {"failures", pr.failures}}},
            {"connections", traffic_json(t)},
            {"backend", pr.peer_backend ? to_json(*pr.peer_backend) : json::value(nullptr)},
            {"backend_state", backend_word(pr.peer_backend)}};
        // peers[].services: the local listener, whether the peer says the
        // service's backend answers (null: unknown), and the connections.
        json::object services;
        for (const auto& [name, local] : p.services) {
            json::value reachable = nullptr;
            std::string error;
            if (pr.up && pr.peer_backend) {
                error = "not served there (not in its inbound.services)";
                for (const auto& sv : pr.peer_backend->services)
                    if (sv.name == name) {
                        reachable = sv.reachable;
                        error = sv.error;
                    }
            }
            services[name] = json::object{
                {"local", local},
                {"backend_reachable", reachable},
                {"error", error},
                {"connections", traffic_json(traffic_of(Direction::outbound, p.name, name))}};
        }
        peer["services"] = std::move(services);
        peers.push_back(std::move(peer));
    }

    json::value inbound = nullptr;
    if (!s.inbound_listen.empty()) {
        json::array listen;
        for (const auto& l : s.inbound_listen) listen.emplace_back(l);
        json::object from;
        std::int64_t active = 0;
        for (const auto& t : s.traffic) {
            if (t.direction != Direction::inbound) continue;
            active += t.active;
            if (t.service != "postgresql") continue;  // under "services" below
            auto o = traffic_json(&t);
            o["last_handshake"] = t.last_handshake;
            o["last_error"] = t.last_error;
            from[t.peer] = std::move(o);
        }
        json::object services;
        for (const auto& sv : s.services) {
            json::array allow;
            for (const auto& a : sv.allow) allow.emplace_back(a);
            json::value reachable = nullptr;
            std::string error;
            for (const auto& b : s.backend.services)
                if (b.name == sv.name) {
                    reachable = b.reachable;
                    error = b.error;
                }
            json::object by_peer;
            for (const auto& t : s.traffic) {
                if (t.direction != Direction::inbound || t.service != sv.name) continue;
                auto o = traffic_json(&t);
                o["last_handshake"] = t.last_handshake;
                o["last_error"] = t.last_error;
                by_peer[t.peer] = std::move(o);
            }
            services[sv.name] = json::object{{"alpn", sv.alpn},
                                             {"backend", sv.backend},
                                             {"allow", std::move(allow)},
                                             {"backend_reachable", reachable},
                                             {"error", error},
                                             {"peers", std::move(by_peer)}};
        }
        inbound = json::object{
            {"listen", std::move(listen)},  {"backend", s.inbound_backend},
            {"active_connections", active}, {"handshakes", handshakes(Direction::inbound)},
            {"peers", std::move(from)},     {"services", std::move(services)}};
    }

    json::value firewall = nullptr;
    if (s.firewall.enabled) {
        json::object drops;
        for (const auto& [port, d] : s.firewall.drops)
            drops[std::to_string(port)] = json::object{{"packets", d.packets}, {"bytes", d.bytes}};
        firewall = json::object{
            {"applied", s.firewall.applied}, {"table", "inet " + s.firewall.table},
            {"error", s.firewall.error},     {"repairs", s.firewall.repairs},
            {"missing", s.firewall.missing}, {"resolve_failures", s.firewall.resolve_failures},
            {"drops", std::move(drops)}};
    }

    json::value backend = nullptr;
    if (s.backend_checked_by_config)
        backend = json::object{{"checked", s.backend.checked},
                               {"checked_at", s.backend.checked_at},
                               {"reachable", s.backend.reachable},
                               {"error", s.backend.error}};
    json::value postgres = nullptr;
    if (s.postgres_configured) {
        json::object pg{{"role", role_of(s)}};
        if (s.backend.postgres) {
            const auto& p = *s.backend.postgres;
            pg["up"] = p.up;
            pg["error"] = p.error;
            pg["answered"] = p.answered;
            pg["in_recovery"] = p.in_recovery;
            pg["current_lsn"] = p.current_lsn;
            pg["receive_lsn"] = p.receive_lsn;
            pg["replay_lsn"] = p.replay_lsn;
            pg["receiver_status"] = p.receiver_status;
            pg["replay_paused"] = p.replay_paused;
            pg["lag_seconds"] = p.replay_delay_seconds;
            pg["server_version"] = p.server_version;
            pg["timeline"] = p.timeline;
            // Who is who: each walsender with the peer whose tunnel carries it.
            json::array rows;
            for (const auto& w : p.walsenders) {
                auto bytes = [&](const std::string& lsn) {
                    auto v = walsender_lag_bytes(p, lsn);
                    return v ? json::value(*v) : json::value(nullptr);
                };
                auto secs = [](double v) { return v < 0 ? json::value(nullptr) : json::value(v); };
                // The row as a pong carries it, with lags in bytes and seconds
                // (null while unknown) in place of its raw seconds.
                auto row = to_json(w).as_object();
                for (const char* raw : {"write_lag", "flush_lag", "replay_lag"}) row.erase(raw);
                if (w.peer.empty()) row["peer"] = nullptr;
                row["lag_bytes"] = json::object{{"sent", bytes(w.sent_lsn)},
                                                {"write", bytes(w.write_lsn)},
                                                {"flush", bytes(w.flush_lsn)},
                                                {"replay", bytes(w.replay_lsn)}};
                row["lag_seconds"] = json::object{{"write", secs(w.write_lag)},
                                                  {"flush", secs(w.flush_lag)},
                                                  {"replay", secs(w.replay_lag)}};
                rows.push_back(std::move(row));
            }
            pg["replication"] = std::move(rows);
            if (p.in_recovery) {
                const auto* w = upstream_walsender(s);
                pg["sync_state"] = w ? json::value(w->sync_state) : json::value(nullptr);
            }
        }
        auto lag = replication_lag_bytes(s);
        pg["lag_bytes"] = lag ? json::value(*lag) : json::value(nullptr);
        postgres = std::move(pg);
    }

    json::array routes;
    for (const auto& r : s.routes) {
        json::array candidates;
        for (const auto& c : r.candidates)
            candidates.push_back(
                json::object{{"name", c.name},
                             {"self", c.self},
                             {"role", to_string(c.role)},
                             {"reachable", c.reachable},
                             {"eligible", c.eligible},
                             {"lag_bytes", c.lag ? json::value(*c.lag) : json::value(nullptr)},
                             {"why_not", c.why_not},
                             {"patroni_leader", c.patroni_leader ? json::value(*c.patroni_leader)
                                                                 : json::value(nullptr)},
                             {"connections", c.connections}});
        json::value last_switch = nullptr;
        if (r.last_switch)
            last_switch = json::object{{"at", r.last_switch->at},
                                       {"from", r.last_switch->from},
                                       {"to", r.last_switch->to},
                                       {"cause", r.last_switch->cause}};
        json::value quorum = nullptr;
        if (r.quorum) {
            json::array members;
            for (const auto& m : r.quorum->members)
                members.push_back(json::object{{"name", m.name},
                                               {"self", m.self},
                                               {"witness", m.witness},
                                               {"reachable", m.reachable},
                                               {"why", m.why}});
            quorum =
                json::object{{"required", r.quorum->required}, {"voters", r.quorum->voters},
                             {"reached", r.quorum->reached},   {"met", r.quorum->met},
                             {"detail", r.quorum->detail},     {"members", std::move(members)}};
        }
        routes.push_back(json::object{
            {"local", r.name},
            {"to", r.to},
            {"leader", r.leader.empty() ? json::value(nullptr) : json::value(r.leader)},
            {"target", r.target.empty() ? json::value(nullptr) : json::value(r.target)},
            {"split_brain", r.split_brain},
            {"refusal", r.refusal},
            {"detail", r.detail},
            {"candidates", std::move(candidates)},
            {"connections", r.connections},
            {"refused", r.refused},
            {"switches", r.switches},
            {"last_switch", std::move(last_switch)},
            {"quorum", std::move(quorum)}});
    }

    json::object top{{"node", s.node},
                     {"version", s.version},
                     {"time", s.now},
                     {"started_at", s.started_at},
                     {"pid", s.pid},
                     {"uptime_seconds", s.now - s.started_at},
                     {"ready", problems.empty()},
                     {"problems", std::move(prob)},
                     {"summary", one_line_summary(s)},
                     {"tls", std::move(tls)},
                     {"inbound", std::move(inbound)},
                     {"outbound", json::object{{"handshakes", handshakes(Direction::outbound)}}},
                     {"peers", std::move(peers)},
                     {"routes", std::move(routes)},
                     {"firewall", std::move(firewall)},
                     {"backend", std::move(backend)},
                     {"postgres", std::move(postgres)}};
    return json::serialize(top) + "\n";
}

}  // namespace tunneld

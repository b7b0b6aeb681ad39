#include "tunneld/health_routes.hpp"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <sstream>

namespace tunneld {

namespace json = boost::json;
namespace urls = boost::urls;

namespace {

const PostgresState* local_postgres(const Snapshot& s) {
    return s.backend.postgres && s.backend.postgres->up ? &*s.backend.postgres : nullptr;
}

// "postgres: connection refused", or the check's own problem as it stands
// ("health.postgres: role tunneld does not exist: ...").
std::string postgres_problem(const Snapshot& s) {
    if (!s.backend.postgres) return "postgres: not checked yet";
    const auto& p = *s.backend.postgres;
    return p.answered ? p.error : "postgres: " + p.error;
}

std::string role_of(const Snapshot& s) {
    if (!s.postgres_configured) return "unknown";
    auto* pg = local_postgres(s);
    if (!pg) return s.backend.postgres && s.backend.postgres->answered ? "unknown" : "down";
    return pg->in_recovery ? "replica" : "primary";
}

std::string peer_state(const ProbeState& p) {
    return !p.probed ? "probing" : p.up ? "up" : "unreachable";
}

// "up", "down" or "unknown" for a backend as a pong reported it.
std::string backend_word(const std::optional<BackendState>& b) {
    if (!b || !b->checked) return "unknown";
    return b->reachable ? "up" : "down";
}

std::string peer_summary(const PeerView& p, std::int64_t now) {
    const auto& pr = p.probe;
    if (!pr.probed) return "probing";
    if (!pr.up) return "unreachable for " + std::to_string(now - pr.since) + "s: " + pr.last_error;
    auto b = backend_word(pr.peer_backend);
    if (b == "down") return "reachable, its backend down: " + pr.peer_backend->error;
    if (b == "unknown") return "reachable, its backend not checked";
    return "reachable, its backend up";
}

json::object check_body(const Snapshot& s, std::string_view check, bool ok,
                        const std::vector<std::string>& problems) {
    json::array arr;
    for (const auto& p : problems) arr.emplace_back(p);
    json::object o{{"node", s.node},
                   {"check", check},
                   {"ok", ok},
                   {"role", role_of(s)},
                   {"problems", std::move(arr)}};
    if (auto lag = replication_lag_bytes(s)) o["lag_bytes"] = *lag;
    return o;
}

HealthResponse json_response(unsigned status, const json::value& v) {
    return {status, "application/json", json::serialize(v) + "\n"};
}

HealthResponse check(const Snapshot& s, std::string_view name, std::vector<std::string> problems) {
    bool ok = problems.empty();
    return json_response(ok ? 200 : 503, check_body(s, name, ok, problems));
}

std::vector<std::string> primary_problems(const Snapshot& s) {
    if (!s.postgres_configured)
        return {"health.postgres is not set: the role of the local postgres is unknown"};
    auto* pg = local_postgres(s);
    if (!pg) return {postgres_problem(s)};
    if (pg->in_recovery) return {"postgres is in recovery (a standby)"};
    return {};
}

std::vector<std::string> replica_problems(const Snapshot& s, std::optional<std::uint64_t> max_lag,
                                          std::optional<double> max_lag_seconds) {
    if (!s.postgres_configured)
        return {"health.postgres is not set: the role of the local postgres is unknown"};
    auto* pg = local_postgres(s);
    if (!pg) return {postgres_problem(s)};
    if (!pg->in_recovery) return {"postgres is not in recovery (it is a primary)"};
    std::vector<std::string> out;
    if (pg->receiver_status != "streaming")
        out.push_back(
            "WAL receiver is " +
            (pg->receiver_status.empty() ? std::string("not running") : pg->receiver_status) +
            ", not streaming");
    if (max_lag) {
        auto lag = replication_lag_bytes(s);
        if (!lag)
            out.push_back("replication lag unknown");
        else if (*lag > *max_lag)
            out.push_back("replication lag " + std::to_string(*lag) + " bytes > " +
                          std::to_string(*max_lag));
    }
    if (max_lag_seconds && pg->replay_delay_seconds > *max_lag_seconds)
        out.push_back("replay " + std::to_string(pg->replay_delay_seconds) + " s behind > " +
                      std::to_string(*max_lag_seconds));
    return out;
}

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

}  // namespace

std::optional<std::uint64_t> parse_size(std::string_view text) {
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || end == text.data()) return std::nullopt;
    std::string unit(end, text.data() + text.size());
    for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    static const std::pair<const char*, int> units[] = {
        {"", 0},  {"b", 0},  {"kb", 1},  {"kib", 1}, {"k", 1},  {"mb", 2},  {"mib", 2},
        {"m", 2}, {"gb", 3}, {"gib", 3}, {"g", 3},   {"tb", 4}, {"tib", 4}, {"t", 4}};
    for (const auto& [name, power] : units) {
        if (unit != name) continue;
        std::uint64_t v = n;
        for (int i = 0; i < power; ++i) {
            if (v > (UINT64_MAX >> 10)) return std::nullopt;
            v <<= 10;
        }
        return v;
    }
    return std::nullopt;
}

std::optional<std::uint64_t> replication_lag_bytes(const Snapshot& s) {
    auto* pg = local_postgres(s);
    if (!pg || !pg->in_recovery) return std::nullopt;
    auto replay = parse_lsn(pg->replay_lsn);
    if (!replay) return std::nullopt;
    std::uint64_t newest = parse_lsn(pg->receive_lsn).value_or(*replay);
    for (const auto& p : s.peers) {
        const auto& b = p.probe.peer_backend;
        if (!p.probe.up || !b || !b->postgres || !b->postgres->up || b->postgres->in_recovery)
            continue;
        if (auto lsn = parse_lsn(b->postgres->current_lsn)) newest = std::max(newest, *lsn);
    }
    return newest > *replay ? newest - *replay : 0;
}

std::vector<std::string> readiness_problems(const Snapshot& s, bool with_backend) {
    std::vector<std::string> out;
    if (s.stopping) out.push_back("stopping (SIGTERM): draining connections");
    if (!s.workers_alive) out.push_back("an I/O thread did not answer its heartbeat");
    if (!s.listeners_up) out.push_back("listeners are not up yet");
    if (s.cert_not_after && s.now >= s.cert_not_after)
        out.push_back("certificate serial " + s.cert_serial + " has expired: rotate it");
    if (s.firewall.enabled && !s.firewall.applied)
        out.push_back("firewall table inet " + s.firewall.table + " is not applied" +
                      (s.firewall.error.empty() ? "" : ": " + s.firewall.error));
    for (const auto& p : s.peers) {
        if (!p.probe.probed)
            out.push_back("peer " + p.name + ": not probed yet");
        else if (!p.probe.up)
            out.push_back("peer " + p.name + " unreachable for " +
                          std::to_string(s.now - p.probe.since) + "s: " + p.probe.last_error);
    }
    if (with_backend && s.backend_checked_by_config) {
        if (!s.backend.checked)
            out.push_back("backend: not checked yet");
        else if (!s.backend.reachable)
            out.push_back("backend does not accept connections: " + s.backend.error);
        else if (s.backend.postgres && !s.backend.postgres->up)
            out.push_back(postgres_problem(s));
    }
    return out;
}

bool wants_full_snapshot(std::string_view target) {
    auto path = target.substr(0, target.find('?'));
    return path == "/status" || path == "/metrics";
}

HealthResponse handle_request(const Snapshot& s, std::string_view target) {
    auto parsed = urls::parse_origin_form(target);
    if (!parsed) return {400, "text/plain", "bad request target\n"};
    std::string path = parsed->path();
    std::optional<std::uint64_t> max_lag;
    std::optional<double> max_lag_seconds;
    for (auto param : parsed->params()) {
        if (param.key == "lag") {
            max_lag = parse_size(param.value);
            if (!max_lag)
                return {
                    400, "text/plain",
                    "lag=" + std::string(param.value) + ": expected bytes, e.g. 16MB or 1048576\n"};
        } else if (param.key == "lag_seconds") {
            double v = 0;
            auto [end, ec] =
                std::from_chars(param.value.data(), param.value.data() + param.value.size(), v);
            if (ec != std::errc() || end != param.value.data() + param.value.size() || v < 0)
                return {400, "text/plain",
                        "lag_seconds=" + std::string(param.value) + ": expected seconds\n"};
            max_lag_seconds = v;
        }
    }
    if (path == "/liveness") {
        std::vector<std::string> p;
        if (!s.workers_alive) p.push_back("an I/O thread did not answer its heartbeat");
        return check(s, "liveness", p);
    }
    if (path == "/readiness") return check(s, "readiness", readiness_problems(s, false));
    if (path == "/health") return check(s, "health", readiness_problems(s, true));
    if (path == "/primary" || path == "/" || path == "/master" || path == "/leader" ||
        path == "/read-write")
        return check(s, "primary", primary_problems(s));
    if (path == "/replica" || path == "/standby")
        return check(s, "replica", replica_problems(s, max_lag, max_lag_seconds));
    if (path == "/read-only") {
        auto p = primary_problems(s);
        if (!p.empty() && replica_problems(s, std::nullopt, std::nullopt).empty()) p.clear();
        return check(s, "read-only", p);
    }
    if (path == "/status") return {200, "application/json", render_status(s)};
    if (path == "/metrics")
        return {200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(s)};
    return {404, "text/plain",
            "unknown path " + path +
                "; try /liveness /readiness /health /primary /replica?lag=16MB /read-only /status "
                "/metrics\n"};
}

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
                     {"reloads", std::move(reloads)}};

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
    auto traffic_of = [&](Direction d, const std::string& peer) -> const TrafficView* {
        for (const auto& t : s.traffic)
            if (t.direction == d && t.peer == peer) return &t;
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
            auto o = traffic_json(&t);
            o["last_handshake"] = t.last_handshake;
            o["last_error"] = t.last_error;
            from[t.peer] = std::move(o);
        }
        inbound = json::object{{"listen", std::move(listen)},
                               {"backend", s.inbound_backend},
                               {"active_connections", active},
                               {"handshakes", handshakes(Direction::inbound)},
                               {"peers", std::move(from)}};
    }

    json::value firewall = nullptr;
    if (s.firewall.enabled) {
        json::object drops;
        for (const auto& [port, d] : s.firewall.drops)
            drops[std::to_string(port)] = json::object{{"packets", d.packets}, {"bytes", d.bytes}};
        firewall = json::object{{"applied", s.firewall.applied},
                                {"table", "inet " + s.firewall.table},
                                {"error", s.firewall.error},
                                {"repairs", s.firewall.repairs},
                                {"resolve_failures", s.firewall.resolve_failures},
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
        }
        auto lag = replication_lag_bytes(s);
        pg["lag_bytes"] = lag ? json::value(*lag) : json::value(nullptr);
        postgres = std::move(pg);
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
                     {"firewall", std::move(firewall)},
                     {"backend", std::move(backend)},
                     {"postgres", std::move(postgres)}};
    return json::serialize(top) + "\n";
}

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
    m.single("tunneld_last_reload_failed", "gauge",
             "1 when the last reload failed (the previous material is in use).",
             s.reloads.last_error.empty() ? 0 : 1);

    m.family("tunneld_connections", "gauge",
             "Relayed connections open now, by peer and direction.");
    for (const auto& t : s.traffic)
        m.sample("tunneld_connections", {{"peer", t.peer}, {"direction", to_string(t.direction)}},
                 static_cast<double>(t.active));
    m.family("tunneld_connections_total", "counter",
             "Relayed connections opened, by peer and direction.");
    for (const auto& t : s.traffic)
        m.sample("tunneld_connections_total",
                 {{"peer", t.peer}, {"direction", to_string(t.direction)}},
                 static_cast<double>(t.opened));
    m.family("tunneld_received_bytes_total", "counter",
             "Bytes received from the peer over TLS, by peer and direction.");
    for (const auto& t : s.traffic)
        m.sample("tunneld_received_bytes_total",
                 {{"peer", t.peer}, {"direction", to_string(t.direction)}},
                 static_cast<double>(t.received));
    m.family("tunneld_sent_bytes_total", "counter",
             "Bytes sent to the peer over TLS, by peer and direction.");
    for (const auto& t : s.traffic)
        m.sample("tunneld_sent_bytes_total",
                 {{"peer", t.peer}, {"direction", to_string(t.direction)}},
                 static_cast<double>(t.sent));
    m.family("tunneld_handshakes_total", "counter",
             "Finished TLS handshakes, by direction and reason (ok or the failure).");
    for (const auto& [key, n] : s.handshakes)
        m.sample("tunneld_handshakes_total",
                 {{"direction", to_string(key.first)}, {"reason", key.second}},
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
    }
    return m.str();
}

std::string one_line_summary(const Snapshot& s) {
    int up = 0;
    for (const auto& p : s.peers) up += p.probe.up;
    std::int64_t conns = 0;
    for (const auto& t : s.traffic) conns += t.active;
    std::string out = s.node;
    auto problems = readiness_problems(s, true);
    out += problems.empty() ? ": healthy" : ": " + problems.front();
    if (!s.peers.empty())
        out += "; peers " + std::to_string(up) + "/" + std::to_string(s.peers.size()) + " up";
    out += "; " + std::to_string(conns) + " connection(s)";
    if (s.postgres_configured) out += "; postgres " + role_of(s);
    if (s.firewall.enabled)
        out += s.firewall.applied ? "; firewall applied" : "; firewall NOT applied";
    out += "; cert " + std::to_string((s.cert_not_after - s.now) / 86400) + " days left";
    return out;
}

}  // namespace tunneld

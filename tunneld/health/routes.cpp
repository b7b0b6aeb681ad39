#include "tunneld/health/routes.hpp"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <sstream>

#include "tunneld/health/facts.hpp"

namespace tunneld {

namespace json = boost::json;
namespace urls = boost::urls;

namespace facts {

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

}  // namespace facts

using namespace facts;

namespace {

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

}  // namespace

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
        // Its position when this node's postgres was sampled (both on this
        // process' clock), else its latest: a burst of writes since is not lag.
        auto lsn = position_at(p.probe.primary_positions, s.backend.sampled_ms);
        if (!lsn) lsn = parse_lsn(b->postgres->current_lsn);
        if (lsn) newest = std::max(newest, *lsn);
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
    if (with_backend)  // a route with nowhere to go: the cluster's problem, seen from here
        for (const auto& r : s.routes)
            if (r.target.empty() && !r.refusal.empty())
                out.push_back("route " + r.name + " (to " + r.to + ") refuses (" + r.refusal +
                              "): " + r.detail);
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

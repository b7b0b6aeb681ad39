#include "tunneld/health/routes.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <sstream>

#include "tunneld/health/facts.hpp"
#include "tunneld/health/patroni.hpp"

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

std::optional<std::uint64_t> walsender_lag_bytes(const PostgresState& pg, const std::string& lsn) {
    auto own = parse_lsn(pg.in_recovery ? pg.receive_lsn : pg.current_lsn);
    auto theirs = parse_lsn(lsn);
    if (!own || !theirs) return std::nullopt;
    return *own > *theirs ? *own - *theirs : 0;
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

// What a health path's query string asks for (Patroni's parameters and tunneld's).
struct Query {
    std::optional<std::uint64_t> max_lag;     // ?lag=16MB (bytes)
    std::optional<double> max_lag_seconds;    // ?lag_seconds=30 (tunneld's)
    std::optional<bool> streaming;            // ?replication_state=streaming | in archive recovery
    std::map<std::string, std::string> tags;  // ?tag_KEY=VALUE
};

// Patroni's document, with tunneld's verdict and reasons under "tunneld".
HealthResponse check(const Snapshot& s, std::string_view name,
                     const std::vector<std::string>& problems) {
    bool ok = problems.empty();
    json::array arr;
    for (const auto& p : problems) arr.emplace_back(p);
    json::object t{{"node", s.node},
                   {"check", name},
                   {"ok", ok},
                   {"role", role_of(s)},
                   {"problems", std::move(arr)}};
    if (auto lag = replication_lag_bytes(s)) t["lag_bytes"] = *lag;
    if (const auto* w = upstream_walsender(s); w && local_postgres(s))
        t["sync_state"] = w->sync_state;
    auto body = patroni_document(s);
    body["tunneld"] = std::move(t);
    return {ok ? 200u : 503u, "application/json", json::serialize(body) + "\n"};
}

std::vector<std::string> primary_problems(const Snapshot& s) {
    if (!s.postgres_configured)
        return {"health.postgres is not set: the role of the local postgres is unknown"};
    auto* pg = local_postgres(s);
    if (!pg) return {postgres_problem(s)};
    if (pg->in_recovery) return {"postgres is in recovery (a standby)"};
    return {};
}

bool truthy(const std::string& v) { return v == "true" || v == "yes" || v == "on" || v == "1"; }

// Patroni's replica_status_code: a running standby within the lag, not tagged
// noloadbalance; tunneld also wants its WAL receiver streaming unless
// ?replication_state=in archive recovery asks for the other case.
std::vector<std::string> replica_problems(const Snapshot& s, const Query& q) {
    if (!s.postgres_configured)
        return {"health.postgres is not set: the role of the local postgres is unknown"};
    auto* pg = local_postgres(s);
    if (!pg) return {postgres_problem(s)};
    if (!pg->in_recovery) return {"postgres is not in recovery (it is a primary)"};
    std::vector<std::string> out;
    bool streaming = pg->receiver_status == "streaming";
    if (q.streaming.value_or(true) && !streaming)
        out.push_back(
            "WAL receiver is " +
            (pg->receiver_status.empty() ? std::string("not running") : pg->receiver_status) +
            ", not streaming");
    if (q.streaming == false && streaming)
        out.push_back("WAL receiver is streaming, not in archive recovery");
    if (q.max_lag) {
        auto lag = replication_lag_bytes(s);
        if (!lag)
            out.push_back("replication lag unknown");
        else if (*lag > *q.max_lag)
            out.push_back("replication lag " + std::to_string(*lag) + " bytes > " +
                          std::to_string(*q.max_lag));
    }
    if (q.max_lag_seconds && pg->replay_delay_seconds > *q.max_lag_seconds)
        out.push_back("replay " + std::to_string(pg->replay_delay_seconds) + " s behind > " +
                      std::to_string(*q.max_lag_seconds));
    if (auto it = s.tags.find("noloadbalance"); it != s.tags.end() && truthy(it->second))
        out.push_back("health.tags.noloadbalance is " + it->second +
                      ": not offered for reads (as in Patroni)");
    return out;
}

// /sync (want_sync) or /async: a standby as the primary's pg_stat_replication
// lists it, by the walsender of this node's own tunnel.
std::vector<std::string> sync_problems(const Snapshot& s, const Query& q, bool want_sync) {
    auto out = replica_problems(s, q);
    if (!out.empty() && !local_postgres(s)) return out;
    if (local_postgres(s) && !local_postgres(s)->in_recovery) return out;
    const auto* w = upstream_walsender(s);
    if (!w)
        out.push_back(
            "no primary peer reports a walsender for this node's tunnel (not streaming through "
            "tunneld, or the primary's inbound.backend is a unix socket)");
    else if (want_sync && !w->synchronous())
        out.push_back("the primary lists this standby as " + w->sync_state +
                      ", not sync or quorum");
    else if (!want_sync && w->synchronous())
        out.push_back("the primary lists this standby as " + w->sync_state + " (synchronous)");
    return out;
}

// Patroni's ?tag_KEY=VALUE: a node without that tag, or with another value, fails.
void check_tags(const Snapshot& s, const Query& q, std::vector<std::string>& problems) {
    if (!problems.empty()) return;  // Patroni looks at tags only when the answer would be 200
    for (const auto& [key, want] : q.tags) {
        auto it = s.tags.find(key);
        if (it == s.tags.end())
            problems.push_back("tag " + key + " is not set (health.tags)");
        else if (it->second != want)
            problems.push_back("tag " + key + " is " + it->second + ", not " + want);
    }
}

// Reads the query string; a bad value is a 400 with what was expected.
std::optional<HealthResponse> read_query(const urls::url_view& url, Query& q) {
    auto bad = [](std::string text) {
        return HealthResponse{400, "text/plain", std::move(text) + "\n"};
    };
    for (auto param : url.params()) {
        if (param.key == "lag") {
            q.max_lag = parse_size(param.value);
            if (!q.max_lag)
                return bad("lag=" + std::string(param.value) +
                           ": expected bytes, e.g. 16MB or 1048576");
        } else if (param.key == "lag_seconds") {
            double v = 0;
            auto [end, ec] =
                std::from_chars(param.value.data(), param.value.data() + param.value.size(), v);
            if (ec != std::errc() || end != param.value.data() + param.value.size() || v < 0)
                return bad("lag_seconds=" + std::string(param.value) + ": expected seconds");
            q.max_lag_seconds = v;
        } else if (param.key == "replication_state") {
            if (param.value == "streaming")
                q.streaming = true;
            else if (param.value == "in archive recovery")
                q.streaming = false;
            else
                return bad("replication_state=" + std::string(param.value) +
                           ": expected streaming or in archive recovery");
        } else if (param.key.starts_with("tag_") && param.key.size() > 4) {
            q.tags[std::string(param.key).substr(4)] = std::string(param.value);
        }
    }
    return std::nullopt;
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
    Query q;
    if (auto bad = read_query(*parsed, q)) return *bad;
    auto is = [&](std::initializer_list<std::string_view> names) {
        return std::find(names.begin(), names.end(), path) != names.end();
    };
    if (is({"/liveness"})) {
        std::vector<std::string> p;
        if (!s.workers_alive) p.push_back("an I/O thread did not answer its heartbeat");
        return check(s, "liveness", p);
    }
    if (is({"/readiness"})) {
        auto p = readiness_problems(s, false);
        if (q.max_lag && local_postgres(s) && local_postgres(s)->in_recovery)
            for (auto& r : replica_problems(s, Query{q.max_lag, {}, {}, {}}))
                if (r.starts_with("replication lag")) p.push_back(r);
        return check(s, "readiness", p);
    }
    if (is({"/health"})) return check(s, "health", readiness_problems(s, true));
    // Patroni ignores tag filters on the leader paths.
    if (is({"/primary", "/", "/master", "/leader", "/read-write"}))
        return check(s, "primary", primary_problems(s));
    if (is({"/standby-leader", "/standby_leader"}))
        return check(s, "standby-leader",
                     {"tunneld has no standby cluster: /standby-leader is 200 only on the leader "
                      "of a Patroni standby cluster"});
    std::vector<std::string> p;
    std::string_view name;
    if (is({"/replica", "/standby"})) {
        name = "replica";
        p = replica_problems(s, q);
    } else if (is({"/read-only"})) {
        name = "read-only";
        p = primary_problems(s);
        if (!p.empty()) p = replica_problems(s, q);
    } else if (is({"/synchronous", "/sync"})) {
        name = "sync";
        p = sync_problems(s, q, true);
    } else if (is({"/asynchronous", "/async"})) {
        name = "async";
        p = sync_problems(s, q, false);
    } else if (is({"/read-only-sync", "/read-only-synchronous"})) {
        name = "read-only-sync";
        p = primary_problems(s);
        if (!p.empty()) p = sync_problems(s, q, true);
    } else if (is({"/patroni"})) {
        auto doc = patroni_document(s);
        doc["tunneld"] = json::object{{"node", s.node}, {"role", role_of(s)}};
        return {200, "application/json", json::serialize(doc) + "\n"};
    } else if (is({"/status"})) {
        return {200, "application/json", render_status(s)};
    } else if (is({"/metrics"})) {
        return {200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(s)};
    } else {
        return {404, "text/plain",
                "unknown path " + path +
                    "; try /liveness /readiness /health /primary /replica?lag=16MB /read-only "
                    "/sync /async /read-only-sync /patroni /status /metrics\n"};
    }
    check_tags(s, q, p);
    return check(s, name, p);
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

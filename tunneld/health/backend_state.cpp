#include "tunneld/health/backend_state.hpp"
#include "tunneld/base/printable.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <chrono>

#include "tunneld/config/config.hpp"

namespace tunneld {

namespace json = boost::json;

namespace {

constexpr std::size_t kMaxServices = 64;  // read from a peer's pong at most
constexpr std::int64_t kMaxAgeMs = 3600 * 1000;

template <class T>
T field(const json::object& o, std::string_view key, T fallback) {
    auto* v = o.if_contains(key);
    if (!v) return fallback;
    if constexpr (std::is_same_v<T, bool>) {
        return v->is_bool() ? v->get_bool() : fallback;
    } else if constexpr (std::is_same_v<T, std::string>) {
        // Text from a peer: escaped and capped here, where it enters.
        return v->is_string() ? printable(std::string_view(v->get_string())) : fallback;
    } else if constexpr (std::is_same_v<T, double>) {
        return v->is_number() ? v->to_number<double>() : fallback;
    } else {
        return v->is_int64() ? v->get_int64() : fallback;
    }
}

}  // namespace

json::value to_json(const BackendState& s) {
    json::object o{{"checked", s.checked},
                   {"checked_at", s.checked_at},
                   {"reachable", s.reachable},
                   {"error", s.error}};
    if (s.sampled_ms != 0) o["age_ms"] = std::max<std::int64_t>(0, steady_ms() - s.sampled_ms);
    if (s.postgres) {
        const auto& p = *s.postgres;
        o["postgres"] = json::object{{"up", p.up},
                                     {"error", p.error},
                                     {"answered", p.answered},
                                     {"in_recovery", p.in_recovery},
                                     {"current_lsn", p.current_lsn},
                                     {"receive_lsn", p.receive_lsn},
                                     {"replay_lsn", p.replay_lsn},
                                     {"receiver_status", p.receiver_status},
                                     {"replay_paused", p.replay_paused},
                                     {"replay_delay_seconds", p.replay_delay_seconds},
                                     {"timeline", p.timeline}};
    }
    if (!s.services.empty()) {
        json::object services;
        for (const auto& sv : s.services)
            services[sv.name] = json::object{{"reachable", sv.reachable}, {"error", sv.error}};
        o["services"] = std::move(services);
    }
    if (s.patroni)
        o["patroni"] = json::object{{"answered", s.patroni->answered},
                                    {"leader", s.patroni->leader},
                                    {"error", s.patroni->error}};
    return o;
}

json::value to_json(const WalSender& w) {
    return json::object{{"pid", w.pid},
                        {"usename", w.usename},
                        {"application_name", w.application_name},
                        {"client_addr", w.client_addr},
                        {"client_port", w.client_port},
                        {"state", w.state},
                        {"sync_state", w.sync_state},
                        {"sync_priority", w.sync_priority},
                        {"sent_lsn", w.sent_lsn},
                        {"write_lsn", w.write_lsn},
                        {"flush_lsn", w.flush_lsn},
                        {"replay_lsn", w.replay_lsn},
                        {"write_lag", w.write_lag},
                        {"flush_lag", w.flush_lag},
                        {"replay_lag", w.replay_lag},
                        {"peer", w.peer}};
}

WalSender walsender_from_json(const json::value& v) {
    WalSender w;
    auto* o = v.if_object();
    if (!o) return w;
    w.pid = field<std::int64_t>(*o, "pid", 0);
    w.usename = field<std::string>(*o, "usename", "");
    w.application_name = field<std::string>(*o, "application_name", "");
    w.client_addr = field<std::string>(*o, "client_addr", "");
    w.client_port = field<std::int64_t>(*o, "client_port", -1);
    w.state = field<std::string>(*o, "state", "");
    w.sync_state = field<std::string>(*o, "sync_state", "");
    w.sync_priority = field<std::int64_t>(*o, "sync_priority", 0);
    w.sent_lsn = field<std::string>(*o, "sent_lsn", "");
    w.write_lsn = field<std::string>(*o, "write_lsn", "");
    w.flush_lsn = field<std::string>(*o, "flush_lsn", "");
    w.replay_lsn = field<std::string>(*o, "replay_lsn", "");
    w.write_lag = field(*o, "write_lag", -1.0);
    w.flush_lag = field(*o, "flush_lag", -1.0);
    w.replay_lag = field(*o, "replay_lag", -1.0);
    w.peer = field<std::string>(*o, "peer", "");
    return w;
}

BackendState backend_state_from_json(const json::value& v) {
    BackendState s;
    auto* o = v.if_object();
    if (!o) return s;
    s.checked = field(*o, "checked", false);
    s.checked_at = field<std::int64_t>(*o, "checked_at", 0);
    s.reachable = field(*o, "reachable", false);
    s.error = field<std::string>(*o, "error", "");
    if (auto age = field<std::int64_t>(*o, "age_ms", -1); age >= 0 && age <= kMaxAgeMs)
        s.sampled_ms = steady_ms() - age;
    if (auto* pv = o->if_contains("postgres"); pv && pv->is_object()) {
        const auto& p = pv->get_object();
        PostgresState pg;
        pg.up = field(p, "up", false);
        pg.error = field<std::string>(p, "error", "");
        pg.answered = field(p, "answered", false);
        pg.in_recovery = field(p, "in_recovery", false);
        pg.current_lsn = field<std::string>(p, "current_lsn", "");
        pg.receive_lsn = field<std::string>(p, "receive_lsn", "");
        pg.replay_lsn = field<std::string>(p, "replay_lsn", "");
        pg.receiver_status = field<std::string>(p, "receiver_status", "");
        pg.replay_paused = field(p, "replay_paused", false);
        pg.replay_delay_seconds = field(p, "replay_delay_seconds", 0.0);
        pg.timeline = field<std::int64_t>(p, "timeline", 0);
        s.postgres = std::move(pg);
    }
    if (auto* sv = o->if_contains("services"); sv && sv->is_object()) {
        // A peer's word: only well-formed names, a bounded number, short errors.
        for (const auto& [name, value] : sv->get_object()) {
            if (s.services.size() >= kMaxServices) break;
            auto* entry = value.if_object();
            if (!entry || !is_valid_service_name(std::string(name))) continue;
            auto error = field<std::string>(*entry, "error", "");
            if (error.size() > 512) error.resize(512);
            s.services.push_back({std::string(name), field(*entry, "reachable", false), error});
        }
    }
    if (auto* pv = o->if_contains("patroni"); pv && pv->is_object()) {
        const auto& p = pv->get_object();
        PatroniLeader pl;
        pl.answered = field(p, "answered", false);
        pl.leader = pl.answered && field(p, "leader", false);
        pl.error = field<std::string>(p, "error", "");
        if (pl.error.size() > 512) pl.error.resize(512);
        s.patroni = std::move(pl);
    }
    return s;
}

std::int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::optional<std::uint64_t> parse_lsn(std::string_view text) {
    auto slash = text.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == text.size() || slash > 8 ||
        text.size() - slash - 1 > 8)
        return std::nullopt;
    std::uint32_t hi = 0, lo = 0;
    auto parse = [](std::string_view part, std::uint32_t& out) {
        auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), out, 16);
        return ec == std::errc() && end == part.data() + part.size();
    };
    if (!parse(text.substr(0, slash), hi) || !parse(text.substr(slash + 1), lo))
        return std::nullopt;
    return (static_cast<std::uint64_t>(hi) << 32) | lo;
}

void keep_position(std::vector<LsnSample>& positions, LsnSample s) {
    if (!positions.empty() && positions.back().at_ms >= s.at_ms) return;  // seen (or older)
    positions.push_back(s);
    if (positions.size() > kPositionsKept) positions.erase(positions.begin());
}

std::optional<std::uint64_t> position_at(const std::vector<LsnSample>& positions,
                                         std::int64_t at_ms) {
    if (at_ms == 0) return std::nullopt;
    std::optional<std::uint64_t> out;
    for (const auto& p : positions)
        if (p.at_ms <= at_ms) out = p.lsn;
    return out;
}

void note_peer_backend(BackendState& backend, std::vector<LsnSample>& positions, double rtt_ms) {
    if (backend.sampled_ms != 0) backend.sampled_ms -= static_cast<std::int64_t>(rtt_ms / 2);
    const auto& pg = backend.postgres;
    auto lsn = pg && pg->up && !pg->in_recovery ? parse_lsn(pg->current_lsn) : std::nullopt;
    if (!lsn)
        positions.clear();
    else if (backend.sampled_ms != 0)
        keep_position(positions, {backend.sampled_ms, *lsn});
}

}  // namespace tunneld

#include "tunneld/route/route_choice.hpp"

#include <algorithm>
#include <cstdio>

namespace tunneld {

namespace {

RouteRole role_of(const RouteCandidate& c) {
    if (!c.reachable || !c.postgres || !c.postgres->up) return RouteRole::unknown;
    return c.postgres->in_recovery ? RouteRole::replica : RouteRole::primary;
}

std::string bytes_text(std::uint64_t n) {
    auto unit = [n](std::uint64_t size, const char* name) {
        if (n % size == 0) return std::to_string(n / size) + " " + name;
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.1f %s",
                      static_cast<double>(n) / static_cast<double>(size), name);
        return std::string(buf);
    };
    if (n >= (1u << 20)) return unit(1u << 20, "MB");
    if (n >= (1u << 10)) return unit(1u << 10, "kB");
    return std::to_string(n) + " bytes";
}

std::string unknown_why(const RouteCandidate& c) {
    if (!c.reachable)
        return c.unreachable_why.empty() ? "unreachable" : "unreachable: " + c.unreachable_why;
    if (!c.postgres) return "its postgres role is unknown (no health.postgres there)";
    if (!c.postgres->up) return "its postgres is down: " + c.postgres->error;
    return "";
}

bool patroni_leads(const RouteCandidate& c) {
    return c.patroni && c.patroni->answered && c.patroni->leader;
}

std::string patroni_why(const RouteCandidate& c) {
    if (!c.patroni) return "its Patroni's leader lock is unknown (no health.patroni there)";
    if (!c.patroni->answered) return c.patroni->error;
    return "its Patroni does not hold the leader lock";
}

std::string join_names(const std::vector<std::string>& names) {
    std::string out;
    for (std::size_t i = 0; i < names.size(); ++i)
        out += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
    return out;
}

}  // namespace

void PrimaryPositions::record(const std::vector<RouteCandidate>& candidates) {
    for (const auto& c : candidates) {
        if (role_of(c) != RouteRole::primary || c.sampled_ms == 0) continue;
        auto lsn = parse_lsn(c.postgres->current_lsn);
        if (!lsn) continue;
        auto it = std::find_if(by_node_.begin(), by_node_.end(),
                               [&](const auto& e) { return e.first == c.name; });
        if (it == by_node_.end()) it = by_node_.insert(by_node_.end(), {c.name, {}});
        keep_position(it->second, {c.sampled_ms, *lsn});
    }
}

void PrimaryPositions::attach(std::vector<RouteCandidate>& candidates) const {
    for (auto& c : candidates) {
        if (role_of(c) != RouteRole::primary) continue;
        for (const auto& [name, list] : by_node_)
            if (name == c.name) c.positions = list;
    }
}

namespace {

// A primary's position when a replica was sampled at `at_ms`.
std::optional<std::uint64_t> primary_position(const RouteCandidate& c, std::int64_t at_ms) {
    if (auto lsn = position_at(c.positions, at_ms)) return lsn;
    return parse_lsn(c.postgres->current_lsn);
}

}  // namespace

std::optional<std::uint64_t> lag_behind(const PostgresState& pg, std::int64_t sampled_ms,
                                        const std::vector<RouteCandidate>& candidates) {
    auto replay = parse_lsn(pg.replay_lsn);
    if (!replay) return std::nullopt;
    std::uint64_t newest = parse_lsn(pg.receive_lsn).value_or(*replay);
    for (const auto& c : candidates)
        if (role_of(c) == RouteRole::primary)
            if (auto lsn = primary_position(c, sampled_ms)) newest = std::max(newest, *lsn);
    return newest > *replay ? newest - *replay : 0;
}

namespace {

// A newer timeline than `primary`'s on another reachable node: its postgres was
// promoted over (the majority side of a partition) and this one is stale.
const RouteCandidate* newer_timeline(const RouteCandidate& primary,
                                     const std::vector<RouteCandidate>& candidates) {
    auto tl = primary.postgres->timeline;
    if (tl <= 0) return nullptr;
    const RouteCandidate* newest = nullptr;
    for (const auto& c : candidates)
        if (&c != &primary && role_of(c) != RouteRole::unknown && c.postgres->timeline > tl &&
            (!newest || c.postgres->timeline > newest->postgres->timeline))
            newest = &c;
    return newest;
}

}  // namespace

RouteChoice choose_route(const RouteConfig& route, const std::vector<RouteCandidate>& candidates,
                         const QuorumView* quorum) {
    RouteChoice out;
    for (const auto& c : candidates) {
        CandidateView v;
        v.name = c.name;
        v.self = c.self;
        v.role = role_of(c);
        v.reachable = c.reachable;
        v.connections = c.connections;
        if (c.reachable && c.patroni && c.patroni->answered) v.patroni_leader = c.patroni->leader;
        if (v.role == RouteRole::replica) v.lag = lag_behind(*c.postgres, c.sampled_ms, candidates);
        out.candidates.push_back(std::move(v));
    }

    if (route.to == RouteConfig::To::peer) {
        for (auto& v : out.candidates)
            if (!v.self && v.name == route.peer) v.eligible = true;
        out.target = route.peer;  // like peers[].local: dialled whatever its role
        return out;
    }

    if (route.to == RouteConfig::To::primary) {
        // A node that has not answered yet may be a second primary: no vote
        // without it (at most timeouts.connect + handshake after start).
        std::vector<std::string> waiting;
        for (const auto& c : candidates)
            if (!c.known) waiting.push_back(c.name);
        if (!waiting.empty()) {
            out.refusal = "no_primary";
            out.detail = "waiting for a first answer from " + join_names(waiting);
            for (auto& v : out.candidates) v.why_not = "not asked yet";
            return out;
        }
        if (quorum && !quorum->met) {
            out.refusal = "no_quorum";
            out.detail = "no quorum: " + quorum->detail;
            out.close_live = true;
            for (auto& v : out.candidates) v.why_not = "no quorum";
            return out;
        }
        std::vector<std::string> primaries;
        const RouteCandidate* pick = nullptr;
        for (std::size_t i = 0; i < candidates.size(); ++i) {
            auto& v = out.candidates[i];
            if (v.role == RouteRole::primary && route.leader == RouteConfig::Leader::patroni &&
                !patroni_leads(candidates[i])) {
                // Its postgres is not in recovery, but the DCS has another leader
                // (or says nothing): not the primary, and no split brain either.
                v.why_not = "not in recovery, but " + patroni_why(candidates[i]);
            } else if (v.role == RouteRole::primary) {
                primaries.push_back(v.name);
                pick = &candidates[i];
                v.eligible = true;
            } else {
                v.why_not = v.role == RouteRole::replica ? "in recovery (a standby)"
                                                         : unknown_why(candidates[i]);
            }
        }
        const RouteCandidate* newer =
            primaries.size() == 1 ? newer_timeline(*pick, candidates) : nullptr;
        if (newer) {
            out.refusal = "no_primary";
            out.close_live = true;
            out.detail = pick->name + " reports primary on timeline " +
                         std::to_string(pick->postgres->timeline) + ", but " + newer->name +
                         " is on timeline " + std::to_string(newer->postgres->timeline) +
                         ": a newer primary was promoted elsewhere";
            for (auto& v : out.candidates)
                if (v.eligible) {
                    v.eligible = false;
                    v.why_not = "timeline " + std::to_string(pick->postgres->timeline) +
                                " superseded (" + newer->name + " is on " +
                                std::to_string(newer->postgres->timeline) + ")";
                }
            return out;
        }
        if (primaries.size() == 1) {
            out.target = pick->name;
            out.target_is_self = pick->self;
            return out;
        }
        out.refusal = "no_primary";
        if (primaries.size() > 1) {
            out.split_brain = true;
            out.detail = "split brain: " + join_names(primaries) + " " +
                         (primaries.size() == 2 ? "both" : "all") + " report primary";
            for (auto& v : out.candidates)
                if (v.eligible) {
                    v.eligible = false;
                    v.why_not = "split brain";
                }
        } else {
            std::vector<std::string> parts;
            for (const auto& v : out.candidates) parts.push_back(v.name + " " + v.why_not);
            out.detail = "no node reports primary";
            if (!parts.empty()) {
                out.detail += " (";
                for (std::size_t i = 0; i < parts.size(); ++i)
                    out.detail += (i ? "; " : "") + parts[i];
                out.detail += ")";
            }
        }
        return out;
    }

    // to: replica
    const RouteCandidate* pick = nullptr;
    bool primary_in_sight = std::any_of(candidates.begin(), candidates.end(), [](const auto& c) {
        return role_of(c) == RouteRole::primary;
    });
    for (std::size_t i = 0; i < candidates.size(); ++i) {
        auto& v = out.candidates[i];
        const auto& c = candidates[i];
        if (v.role != RouteRole::replica) {
            v.why_not = v.role == RouteRole::primary ? "a primary" : unknown_why(c);
            continue;
        }
        if (c.postgres->receiver_status != "streaming") {
            v.why_not = "WAL receiver " + (c.postgres->receiver_status.empty()
                                               ? std::string("not running")
                                               : c.postgres->receiver_status);
            continue;
        }
        if (route.max_lag) {
            if (!v.lag) {
                v.why_not = "lag unknown";
                continue;
            }
            // Measured against its own receive position alone, a replica cut
            // off with it (the minority side of a partition) would look current
            // for ever: the lag counts only against a primary in sight.
            if (!primary_in_sight) {
                v.why_not = "lag unknown: no primary in sight to measure it against";
                continue;
            }
            if (*v.lag > *route.max_lag) {
                v.why_not = "lag " + bytes_text(*v.lag) + " > " + bytes_text(*route.max_lag);
                continue;
            }
        }
        v.eligible = true;
        if (!pick || c.connections < pick->connections) pick = &c;
    }
    if (pick) {
        out.target = pick->name;
        out.target_is_self = pick->self;
        return out;
    }
    out.refusal = "no_replica";
    out.detail = "no replica qualifies";
    std::string parts;
    for (const auto& v : out.candidates)
        parts += (parts.empty() ? "" : "; ") + v.name + " " + v.why_not;
    if (!parts.empty()) out.detail += " (" + parts + ")";
    return out;
}

}  // namespace tunneld

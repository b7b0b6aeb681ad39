#include "tunneld/health/patroni.hpp"

#include <boost/json.hpp>

#include "tunneld/health/facts.hpp"

namespace tunneld {

namespace json = boost::json;

namespace {

json::value lsn_number(const std::string& text) {
    auto v = parse_lsn(text);
    return v ? json::value(*v) : json::value(nullptr);
}

json::value text_or_null(const std::string& text) {
    return text.empty() ? json::value(nullptr) : json::value(text);
}

}  // namespace

const WalSender* upstream_walsender(const Snapshot& s) {
    for (const auto& p : s.peers) {
        const auto& b = p.probe.peer_backend;
        if (p.probe.up && b && b->postgres && b->postgres->up && !b->postgres->in_recovery &&
            p.probe.my_walsender)
            return &*p.probe.my_walsender;
    }
    return nullptr;
}

json::object patroni_document(const Snapshot& s) {
    json::object o;
    if (const auto* pg = facts::local_postgres(s)) {
        o["state"] = "running";
        o["postmaster_start_time"] = text_or_null(pg->postmaster_start_time);
        o["role"] = pg->in_recovery ? "replica" : "master";
        o["server_version"] = pg->server_version;
        if (pg->in_recovery)
            o["xlog"] = json::object{
                {"received_location",
                 lsn_number(pg->receive_lsn.empty() ? pg->replay_lsn : pg->receive_lsn)},
                {"replayed_location", lsn_number(pg->replay_lsn)},
                {"replayed_timestamp", text_or_null(pg->replay_timestamp)},
                {"paused", pg->replay_paused}};
        else
            o["xlog"] = json::object{{"location", lsn_number(pg->current_lsn)}};
        if (pg->timeline > 0) o["timeline"] = pg->timeline;
        json::array rows;
        for (const auto& w : pg->walsenders)
            rows.push_back(json::object{{"usename", w.usename},
                                        {"application_name", w.application_name},
                                        {"client_addr", text_or_null(w.client_addr)},
                                        {"state", w.state},
                                        {"sync_state", w.sync_state},
                                        {"sync_priority", w.sync_priority}});
        if (!rows.empty()) o["replication"] = std::move(rows);
        if (pg->in_recovery)
            if (const auto* w = upstream_walsender(s); w && w->synchronous())
                o["sync_standby"] = true;
        if (!pg->system_identifier.empty()) o["database_system_identifier"] = pg->system_identifier;
    } else {
        // "stopped" when postgres does not take connections; "unknown" when
        // there is no health.postgres or postgres refused the check.
        bool down = s.postgres_configured && s.backend.postgres && !s.backend.postgres->answered;
        o["state"] = down ? "stopped" : "unknown";
        o["role"] = "unknown";
    }
    if (!s.tags.empty()) {
        json::object tags;
        for (const auto& [k, v] : s.tags) tags[k] = v;
        o["tags"] = std::move(tags);
    }
    o["patroni"] = json::object{{"version", s.version}, {"scope", "tunneld"}, {"name", s.node}};
    return o;
}

}  // namespace tunneld

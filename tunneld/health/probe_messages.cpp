#include "tunneld/health/probe_messages.hpp"

#include <boost/json.hpp>

namespace tunneld {

namespace json = boost::json;

bool take_line(std::string& pending, std::string& line) {
    auto nl = pending.find('\n');
    if (nl == std::string::npos) return false;
    line = pending.substr(0, nl);
    pending.erase(0, nl + 1);
    return true;
}

namespace {

// The object in `line`, or nullptr (a depth-limited parse: a peer cannot make us recurse deeply).
std::optional<json::object> object_of(std::string_view line) {
    if (line.size() > kMaxProbeLine) return std::nullopt;
    json::parse_options opt;
    opt.max_depth = 16;
    json::error_code ec;
    auto v = json::parse(line, ec, {}, opt);
    if (ec || !v.is_object()) return std::nullopt;
    return std::move(v.as_object());
}

}  // namespace

std::optional<std::int64_t> parse_ping(std::string_view line) {
    auto o = object_of(line);
    if (!o) return std::nullopt;
    auto* seq = o->if_contains("ping");
    if (!seq || !seq->is_int64()) return std::nullopt;
    return seq->get_int64();
}

std::string make_ping(std::int64_t seq) {
    return json::serialize(json::object{{"ping", seq}}) + "\n";
}

std::optional<Pong> parse_pong(std::string_view line, std::int64_t seq) {
    auto o = object_of(line);
    if (!o) return std::nullopt;
    auto* n = o->if_contains("pong");
    if (!n || !n->is_int64() || n->get_int64() != seq) return std::nullopt;
    Pong pong;
    if (auto* backend = o->if_contains("backend")) pong.backend = backend_state_from_json(*backend);
    if (auto* you = o->if_contains("you"); you && you->is_object())
        pong.you = walsender_from_json(*you);
    return pong;
}

std::string make_pong(std::int64_t seq, const std::string& node, const BackendState& backend,
                      const WalSender* you) {
    json::object o{{"pong", seq}, {"node", node}, {"backend", to_json(backend)}};
    if (you) o["you"] = to_json(*you);
    return json::serialize(o) + "\n";
}

const WalSender* walsender_of(const BackendState& backend, const std::string& peer) {
    if (!backend.postgres || peer.empty()) return nullptr;
    const WalSender* out = nullptr;
    for (const auto& w : backend.postgres->walsenders)
        if (w.peer == peer && (!out || (w.state == "streaming" && out->state != "streaming")))
            out = &w;
    return out;
}

}  // namespace tunneld

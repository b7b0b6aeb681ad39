#include "firewall/guard.hpp"

#include <set>

namespace tunneld::firewall {

GuardSpec Guard::build() {
    resolve_errors_.clear();
    peers_ = resolve_peers(cfg_, resolve_errors_);
    return make_spec(cfg_, peers_);
}

void Guard::apply() {
    auto spec = build();
    auto batch = replace_table(spec, next_seq(1000));
    commit(batch);
    spec_ = std::move(spec);
}

std::string Guard::refresh() {
    auto before = peers_;
    auto spec = build();
    if (peers_ == before) return {};
    commit(replace_elements(spec, next_seq(1000)));
    spec_ = std::move(spec);
    std::string now;
    for (const auto& p : peers_) now += (now.empty() ? "" : ", ") + p.to_string();
    return "peer addresses are now " + (now.empty() ? std::string("(none)") : now);
}

bool Guard::heal() {
    if (table_exists(spec_.table)) return false;
    commit(replace_table(spec_, next_seq(1000)));
    return true;
}

void Guard::reapply() { commit(replace_table(spec_, next_seq(1000))); }

void Guard::remove() { commit(delete_table(cfg_.firewall ? cfg_.firewall->table : "tunneld", next_seq(2))); }

std::string describe(const GuardSpec& spec) {
    std::string out;
    for (const auto& g : spec.ports) {
        out += "  port " + std::to_string(g.port) + ": loopback";
        std::set<std::string> said;  // a peer's address may also be listed by hand
        for (const auto* list : {&g.v4, &g.v6})
            for (const auto& p : *list)
                if (said.insert(p.to_string()).second) out += ", " + p.to_string();
        out += "; everything else dropped and counted\n";
    }
    return out;
}

}  // namespace tunneld::firewall

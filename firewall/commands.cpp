#include "firewall/commands.hpp"

#include "firewall/guard.hpp"
#include "firewall/nft_socket.hpp"
#include "tunneld/error.hpp"

namespace tunneld::firewall {

namespace {

Config load(const std::string& peer) {
    auto cfg = load_config(peer);
    if (!cfg.firewall)
        throw StartupError(peer +
                           ": no 'firewall:' block; add one (see configs/) to guard the ports");
    return cfg;
}

void report_resolution(const Guard& g, std::ostream& out) {
    for (const auto& e : g.resolve_errors())
        out << "warn  peer address not resolved: " << e << "\n";
}

}  // namespace

int show(const std::string& peer, std::ostream& out) {
    auto cfg = load(peer);
    Guard g(cfg);
    auto peers = resolve_peers(cfg);
    auto spec = make_spec(cfg, peers.addresses);
    for (const auto& e : peers.errors) out << "warn  peer address not resolved: " << e << "\n";
    bool present = table_exists(spec.table);
    out << "table inet " << spec.table << ": " << (present ? "applied" : "NOT APPLIED") << "\n"
        << describe(spec);
    if (present)
        for (const auto& [port, c] : read_drop_counters(spec.table))
            out << "  drops to " << port << ": " << c.packets << " packets, " << c.bytes
                << " bytes\n";
    return present ? 0 : 1;
}

int apply(const std::string& peer, std::ostream& out) {
    auto cfg = load_config(peer);
    if (!cfg.firewall || !cfg.firewall->enabled) {
        // The unit runs this before every start: a node without a guard is not an error.
        out << "firewall not enabled in " << peer << "; nothing applied\n";
        return 0;
    }
    Guard g(cfg);
    g.apply();
    report_resolution(g, out);
    out << "applied table inet " << g.spec().table << " (one transaction)\n" << describe(g.spec());
    return 0;
}

std::vector<CheckLine> check_lines(const Config& cfg) {
    std::vector<CheckLine> lines;
    if (!cfg.firewall) {
        lines.push_back({CheckLine::warn,
                         "firewall: no 'firewall:' block; ports are guarded only by your cloud "
                         "firewall (and Docker's published ports bypass ufw/INPUT rules)"});
        return lines;
    }
    if (!cfg.firewall->enabled) {
        lines.push_back({CheckLine::warn, "firewall: enabled: false; the guard is not applied"});
        return lines;
    }
    auto peers = resolve_peers(cfg);
    auto spec = make_spec(cfg, peers.addresses);
    for (const auto& e : peers.errors)
        lines.push_back(
            {CheckLine::warn,
             "firewall: peer address not resolved (its packets would be dropped): " + e});
    for (const auto& g : spec.ports)
        if (g.v4.empty() && g.v6.empty())
            lines.push_back({CheckLine::ok, "firewall: port " + std::to_string(g.port) +
                                                " open to loopback only"});
        else
            lines.push_back(
                {CheckLine::ok, "firewall: port " + std::to_string(g.port) + " open to " +
                                    std::to_string(g.v4.size() + g.v6.size()) +
                                    " prefix(es) and loopback; see tunneld firewall show"});
    try {
        bool present = table_exists(spec.table);
        lines.push_back(
            {CheckLine::ok,
             "firewall: nf_tables usable; table inet " + spec.table +
                 (present ? " is applied" : " not applied yet (the daemon applies it at start)")});
    } catch (const StartupError& e) {
        lines.push_back({CheckLine::fail, e.what()});
    }
    return lines;
}

int remove(const std::string& peer, std::ostream& out) {
    auto cfg = load(peer);
    Guard(cfg).remove();
    out << "removed table inet " << cfg.firewall->table << "\n";
    return 0;
}

}  // namespace tunneld::firewall

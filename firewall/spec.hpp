// What the guard should be, as plain data: for each protected port, the
// prefixes allowed in. Built from the config and the peers' resolved addresses;
// turned into one netlink batch by batch.hpp. No I/O here.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "tunneld/config/config.hpp"
#include "tunneld/config/prefix.hpp"

namespace tunneld::firewall {

struct PortGuard {
    std::uint16_t port = 0;
    std::vector<Prefix> v4, v6;  // as configured ("peers" expanded)
};

struct GuardSpec {
    std::string table;
    std::vector<PortGuard> ports;  // sorted by port
};

// Every plaintext (no TLS) TCP listener the config opens: inbound.local,
// inbound.services[].local, peers[].local, peers[].services, routes[].local
// and health.listen.
std::vector<Endpoint> plaintext_listeners(const Config& cfg);

// The spec for `cfg.firewall`: every protect entry, plus inbound.listen's ports
// (allow: peers) if not listed; a port listed with the inbound port gets the
// peers added. The ports of inbound.backend and every inbound.services backend
// on a loopback address, and of every plaintext listener, are guarded
// loopback-only unless listed. `peer_addresses` are the resolved addresses of
// peers[].connect.
GuardSpec make_spec(const Config& cfg, const std::vector<Prefix>& peer_addresses);

// An inclusive address range of one family, big-endian bytes.
struct Interval {
    std::array<std::uint8_t, 16> first{}, last{};
};
// Sorted, non-overlapping, non-adjacent ranges covering exactly `prefixes`
// (all of one family; nftables refuses overlapping interval elements).
std::vector<Interval> merge(const std::vector<Prefix>& prefixes, bool v6);

}  // namespace tunneld::firewall

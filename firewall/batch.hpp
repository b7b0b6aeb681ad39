// nftables transactions for the guard, built as bytes before anything is sent
// (so they can be inspected and unit-tested without root). Each message that
// the kernel must acknowledge is recorded with a description for errors.
//
// The table, for a guard on port 8765 allowing 10.77.0.2:
//   table inet tunneld {
//     set allow_v4_8765 { type ipv4_addr; flags interval; elements = { 10.77.0.2 } }
//     set allow_v6_8765 { type ipv6_addr; flags interval; }
//     chain guard {
//       type filter hook prerouting priority raw; policy accept;
//       meta iiftype loopback accept
//       tcp dport 8765 ip saddr @allow_v4_8765 accept
//       tcp dport 8765 ip6 saddr @allow_v6_8765 accept
//       tcp dport 8765 counter drop comment "tunneld: drop 8765"
//     }
//   }
// Priority raw (-300) runs before conntrack and before any DNAT (Docker's
// nat prerouting is -100), and a drop in any table is final.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "firewall/spec.hpp"

namespace tunneld::firewall {

struct Batch {
    std::vector<char> bytes;
    std::map<std::uint32_t, std::string> acked;  // seq -> what that message does
};

// Replaces the whole table in one transaction: add table (so the delete never
// fails), delete it, then create table, sets, elements, chain and rules.
// Packets see either the old guard or the new one, never none.
Batch replace_table(const GuardSpec& spec, std::uint32_t first_seq);

// Swaps the allowed addresses of every set (flush + add) in one transaction;
// rules and their drop counters stay.
Batch replace_elements(const GuardSpec& spec, std::uint32_t first_seq);

// Deletes the table (adding it first, so a missing table is no error).
Batch delete_table(const std::string& table, std::uint32_t first_seq);

std::string set_name(bool v6, std::uint16_t port);  // "allow_v4_8765"
inline constexpr const char* kChain = "guard";
std::string drop_comment(std::uint16_t port);  // "tunneld: drop 8765"

}  // namespace tunneld::firewall

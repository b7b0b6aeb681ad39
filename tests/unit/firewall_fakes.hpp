// Scripted DNS and nf_tables for the guard's and the keeper's unit tests, and
// a config with two peers and a protected port.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "firewall/guard.hpp"
#include "tunneld/config/prefix.hpp"
#include "tunneld/error.hpp"

namespace tunneld::firewall::test {

// "10.0.0.0/8" as a Prefix (the test fails if it does not parse).
inline Prefix P(const char* text) {
    auto p = parse_prefix(text);
    EXPECT_TRUE(p) << text << ": " << (p ? "" : p.error().what);
    return p ? *p : Prefix{};
}

struct FakeResolver : Resolver {
    std::map<std::string, std::vector<std::string>>
        answers;  // host -> addresses; absent = lookup fails
    Result<std::vector<Prefix>> resolve(const std::string& host) override {
        auto it = answers.find(host);
        if (it == answers.end()) return Problem{host + ": Temporary failure in name resolution"};
        std::vector<Prefix> out;
        for (const auto& a : it->second) out.push_back(parse_prefix(a).value());
        return out;
    }
};

struct FakeNetlink : Netlink {
    int commits = 0;    // acknowledged
    int fail_next = 0;  // how many of the next commits the "kernel" refuses
    bool exists = true;
    void commit(const Batch&) override {
        if (fail_next > 0) {
            --fail_next;
            throw StartupError("netlink: Cannot allocate memory");
        }
        ++commits;
        exists = true;  // every batch the guard sends leaves the table in place
    }
    bool table_exists(const std::string&) override { return exists; }
};

inline Config config() {
    return parse_config(R"(node: n
tls: {ca: /c, cert: /n.crt, key: /n.key}
peers:
  - {name: primary-1, connect: "primary.example.net:8765", local: "127.0.0.1:6432"}
  - {name: standby-2, connect: "standby2.example.net:8765", local: "127.0.0.1:6433"}
firewall:
  protect: [{port: 5432, allow: [peers]}]
)",
                        "/x.yaml");
}

}  // namespace tunneld::firewall::test

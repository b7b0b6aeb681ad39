// The probe's wire messages as pure functions (no sockets): what a peer sends
// is untrusted, so every parser returns "not that message" for anything else.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tunneld/health/backend_state.hpp"

namespace tunneld {

constexpr std::size_t kMaxProbeLine = 16 * 1024;

// Splits the first '\n'-terminated line off `pending` into `line` (without the
// '\n'). Returns true when one was there; false when more bytes are needed.
bool take_line(std::string& pending, std::string& line);

// {"ping":N} -> N; nullopt for anything else (not JSON, no integer "ping").
std::optional<std::int64_t> parse_ping(std::string_view line);
std::string make_ping(std::int64_t seq);

// What a pong carries: the peer's backend state and, when the peer's postgres
// has a walsender for the asking node's tunnel, that walsender's row (its
// state and sync_state: how a standby learns whether it is synchronous).
struct Pong {
    BackendState backend;
    std::optional<WalSender> you;
};

// {"pong":seq,"node":...,"backend":{...},"you":{...}} answering `seq` -> the
// peer's backend state (default when absent) and its walsender for us; nullopt
// when it is not that pong.
std::optional<Pong> parse_pong(std::string_view line, std::int64_t seq);
std::string make_pong(std::int64_t seq, const std::string& node, const BackendState& backend,
                      const WalSender* you = nullptr);

// The walsender of `backend`'s postgres that serves `peer`'s tunnel (a
// streaming one before any other), or nullptr.
const WalSender* walsender_of(const BackendState& backend, const std::string& peer);

}  // namespace tunneld

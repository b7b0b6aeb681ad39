// The health endpoint's HTTP server (Boost.Beast) on health.listen. It runs
// on its own thread, so neither a busy relay nor a slow postgres check delays
// an answer: each request takes a fresh Snapshot and answers from it
// (health/routes.hpp). Hostile clients are bounded so they cannot hold monitors
// out: at most 64 connections at once and 8 per source address (every
// loopback address counts as one source: a local user has all of 127/8); at
// either cap a new connection evicts the longest-idle evictable one (of that
// source, or of all) instead of being refused, so a client parking keep-alive
// sockets only ever displaces itself. A session is evictable once it has been
// answered, or once its first request's deadline has passed: a monitor that
// has connected and is sending its check is never cut by a flood. 8 KiB of
// headers, 4 KiB of body, 5 s to send the first request, 2 s keep-alive idle.
// GET and HEAD only (405 otherwise).
#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "tunneld/config/endpoint.hpp"
#include "tunneld/health/snapshot.hpp"

namespace tunneld {

// What the server answers to `request` (the bytes of one HTTP request, as a
// client sent them), as response bytes, without a socket: the same limits,
// parser and routes as a session. "" when the bytes are an incomplete request
// (a session would wait for more). For tests and the fuzzer.
std::string http_answer(std::string_view request, const std::function<Snapshot(bool)>& snapshot);

// The source a health connection counts against: its address, or
// "loopback" for any of 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104.
std::string health_source(const boost::asio::ip::address& a);

class HealthServer {
  public:
    // Builds the snapshot for one request; `full` asks for the costly parts
    // (firewall counters) that only /status and /metrics show. Called on the
    // server's thread.
    using SnapshotFn = std::function<Snapshot(bool full)>;

    // Binds every address of `listen`. Throws StartupError (naming health.listen)
    // when one cannot be bound.
    HealthServer(const std::vector<Endpoint>& listen, SnapshotFn snapshot);
    ~HealthServer();

    void start();  // starts the thread and the accept loops
    void stop();   // closes the listeners and open sessions, joins the thread

    static constexpr int kMaxSessions = 64;
    static constexpr int kMaxSessionsPerSource = 8;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tunneld

// The named steps of carry() (pipeline.hpp), each short enough to read at once,
// sharing what one connection knows as it goes: its log fields, its far end
// and its direction. Internal to relay/.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <optional>

#include "tunneld/relay/pipeline.hpp"

namespace tunneld {

class Steps {
  public:
    Steps(Context& ctx, ConnInfo& info, Far& far) : ctx_(ctx), info_(info), far_(far) {}
    Steps(const Steps&) = delete;
    Steps& operator=(const Steps&) = delete;
    ~Steps();

    // A place in the connection table. The inbound port first spends the
    // unauthenticated budget (limits.max_handshakes[_per_source]); a local
    // listener its limits.max_local_connections. Empty (refused, logged) when full.
    Admission admit(Near& near);
    // The TLS server handshake under timeouts.handshake and its verdict;
    // a refusal is logged and counted.
    boost::asio::awaitable<Verdict> accept_tls(LiveConnection& live, Near& near,
                                               std::optional<TlsStream>& tls);
    // A peer's probe: Context::serve_probe answers it until it ends.
    boost::asio::awaitable<void> serve_probe(LiveConnection& live, TlsStream& tls);
    // An authenticated inbound connection takes one of limits.max_connections.
    bool count(LiveConnection& live);
    // The far end for the verdict (inbound): inbound.backend or the service's,
    // whose keepalive then replaces the postgres one on `near`.
    bool resolve_far(const Verdict& v, boost::asio::ip::tcp::socket& near);
    // The probe finds the peer silent: a postgres connection waits (up to
    // timeouts.connect) for it to answer again; a service's is reset at once.
    // True when refused (logged, counted).
    boost::asio::awaitable<bool> refuse_silent(boost::asio::ip::tcp::socket& near);
    // A local_quorum listener while this node is in a minority: reset at once
    // (no_quorum). True when refused (logged, counted).
    bool refuse_minority(boost::asio::ip::tcp::socket& near);
    // open_far failed: log and count why.
    void far_failed(const FarOpen& opened);
    // Both ends open: log the open line, relay, finish.
    boost::asio::awaitable<void> relay(LiveConnection& live, boost::asio::ip::tcp::socket& near,
                                       TlsStream* near_tls, FarStream& far,
                                       std::function<void()>& far_closer);

  private:
    // Resets the accepted end at once (RST, so a client moves on), counts the
    // close and logs it, one line per `key` per 10 s.
    void reset_near(boost::asio::ip::tcp::socket& near, CloseReason reason, const std::string& key,
                    const std::string& detail);
    boost::asio::awaitable<RelayResult> run(boost::asio::ip::tcp::socket& near, TlsStream* near_tls,
                                            FarStream& far, ByteCounters* counters);
    void finish(const RelayResult& r);
    void refused(const std::string& source, const std::string& why);
    Traffic* traffic();
    std::string service_label() const;

    Context& ctx_;
    ConnInfo& info_;
    Far& far_;
    Direction direction_ = Direction::outbound;
    std::string handshake_source_;  // holds a place in the handshake budget while set
};

}  // namespace tunneld

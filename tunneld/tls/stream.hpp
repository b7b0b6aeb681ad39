// A TLS connection over a TCP socket, with OpenSSL reading and writing the
// socket's fd directly (no memory BIO copies) and Asio only waiting for
// readiness. One reader coroutine and one writer coroutine may use it at the
// same time, as long as both run on the socket's (single-threaded) executor.
#pragma once
#include <openssl/types.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>

#include "tunneld/net/openssl_ptr.hpp"
#include "tunneld/tls/context.hpp"
#include "tunneld/tls/handshake_failure.hpp"

namespace tunneld {

namespace asio = boost::asio;
using boost::system::error_code;

// One TLS 1.3 connection over a TCP socket, driven by coroutines.
class TlsStream {
  public:
    enum class Role { server, client };

    // Takes the connected socket; the SSL object is made from `material`'s server
    // or client context and keeps that context alive for the connection's life.
    TlsStream(asio::ip::tcp::socket socket, const TlsMaterial& material, Role role);
    ~TlsStream();
    TlsStream(const TlsStream&) = delete;
    TlsStream& operator=(const TlsStream&) = delete;

    asio::ip::tcp::socket& socket() { return socket_; }
    SSL* native() { return ssl_.get(); }
    // Authorization of this handshake: set its policy before handshake();
    // afterwards peer_check().verdict says who the peer is and what it may do.
    PeerCheck& peer_check() { return check_; }
    const Verdict& verdict() const { return check_.verdict; }

    // Client side only: SNI and ALPN to send, and session resumption slot.
    void set_client_params(const std::string& sni, std::string_view alpn, SessionSlot* slot,
                           std::uint64_t generation);

    // Performs the handshake and the identity check. Never throws; has no
    // timeout of its own (the caller races it with a timer and closes the socket).
    asio::awaitable<HandshakeResult> handshake();

    // Whether the next read_some would first wait for the socket (the last
    // read drained it and OpenSSL holds nothing): a reader can put its buffer
    // away meanwhile.
    bool would_wait() const;
    // That wait alone (nothing to do unless would_wait()); OpenSSL's buffers are
    // freed before it. operation_aborted if the stream is closed meanwhile.
    asio::awaitable<error_code> wait_readable();

    // Reads at least one byte. Returns {eof, 0} after the peer's close_notify,
    // {ssl::error::stream_truncated, 0} on a TCP close without close_notify.
    asio::awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer buf);

    // Writes all of `buf` (awaiting socket writability as needed). First, when
    // this connection has sent the material's rekey_bytes or rekey_interval has
    // passed since its last key update (or handshake), asks OpenSSL for a TLS 1.3
    // KeyUpdate of our sending keys (update_not_requested: the peer rekeys its
    // own direction by its own count, so a reader never has to write), which
    // leaves with this write.
    asio::awaitable<error_code> write_all(asio::const_buffer buf);

    // Half-close: sends close_notify and shuts down the TCP write side. Reading
    // continues to work; does not wait for the peer's close_notify.
    asio::awaitable<error_code> shutdown_send();

    // Closes the socket; pending operations complete with operation_aborted.
    // Afterwards the stream is inert: every operation returns operation_aborted
    // without a syscall, because the fd number OpenSSL's BIO held may already
    // belong to another connection.
    void close();
    bool closed() const { return closed_; }

    // ALPN protocol agreed in the handshake ("" if none).
    std::string alpn() const;
    bool resumed() const;
    // The key-exchange group agreed ("X25519MLKEM768", "X25519", ...; tls/groups.hpp).
    std::string group() const;

  private:
    // Writes out what the write buffer holds, waiting for writability as needed.
    asio::awaitable<error_code> flush();
    // Puts a write buffer (a BIO_f_buffer of sixteen records, so the records of one
    // write_all leave in one write(2)) in front of the socket, or takes it away:
    // only writes of more than one record have it, so an idle connection holds
    // none. Only between write_all calls (the buffer is empty then).
    void use_write_buffer(bool on);

    template <class Op>
    asio::awaitable<std::tuple<int, int>> drive(Op op);

    // Set by a callback on the socket BIO: the last read(2) returned less than
    // OpenSSL asked for, so the socket was empty then. The next read_some waits
    // for readability first instead of a read(2) that would fail with EAGAIN.
    static long note_read(BIO* b, int oper, const char*, std::size_t len, int, long, int ret,
                          std::size_t* done);

    asio::ip::tcp::socket socket_;
    SslPtr ssl_;
    PeerCheck check_;
    bool drained_ = false;
    bool closed_ = false;
    bool write_buffer_ = false;
    void maybe_update_keys(std::size_t about_to_send);
    std::uint64_t rekey_bytes_ = 0;  // 0: never
    std::chrono::milliseconds rekey_interval_{0};
    std::uint64_t sent_since_rekey_ = 0;
    std::chrono::steady_clock::time_point last_rekey_ = std::chrono::steady_clock::now();
};

// TLS 1.3 KeyUpdates this process has asked for since start (all connections).
std::uint64_t key_updates_sent();

}  // namespace tunneld

namespace tunneld {

// Runs stream.handshake() and gives up after `timeout` (closing the socket),
// returning HandshakeFailure::timeout in that case.
asio::awaitable<HandshakeResult> handshake_within(TlsStream& stream, Duration timeout);

}  // namespace tunneld

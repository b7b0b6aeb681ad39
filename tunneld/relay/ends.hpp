// The two kinds of byte stream a relay joins, behind one small interface:
// a plaintext socket (TCP or unix: a local client, a backend) and a TlsStream
// (a peer). relay/engine.cpp is written once against it.
//
//   read(buffer, more)  -> {ec, n}: at least one byte into buffer.get(), or
//                          eof (the other end is done sending), or an error
//   write(data, n)      -> ec: all of it
//   shutdown_send()     -> ec: our half-close (FIN; close_notify first on TLS)
//   prepare()           -> before the first read
//   close()             -> ends every pending operation (operation_aborted)
//   failure(ec)         -> the CloseReason an error of this end stands for
//   kResetIsAnEnd       -> a reset from this end may be how it says goodbye
//                          (postgres and libpq close with bytes unread); a TLS
//                          peer always says goodbye with close_notify
//   what                -> "local end", "backend" or "peer", for log details
#pragma once
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <boost/asio/ssl/error.hpp>

#include "tunneld/base/outcome.hpp"
#include "tunneld/relay/buffers.hpp"
#include "tunneld/relay/plain_io.hpp"
#include "tunneld/tls/stream.hpp"

namespace tunneld {

template <class Socket>
struct PlainEnd {
    Socket& s;
    const char* what;
    static constexpr bool kResetIsAnEnd = true;

    void prepare() {  // read_plain and write_plain call recv(2) and send(2) directly
        error_code ignored;
        s.non_blocking(true, ignored);
    }
    boost::asio::awaitable<std::tuple<error_code, std::size_t>> read(RelayBuffer& b, bool& more) {
        return read_plain(s, b, more);
    }
    boost::asio::awaitable<error_code> write(const char* data, std::size_t n) {
        return write_plain(s, data, n);
    }
    // A plain half-close cannot fail in a way that loses anything: a dead
    // socket shows on its reads.
    boost::asio::awaitable<error_code> shutdown_send() {
        error_code ignored;
        s.shutdown(boost::asio::socket_base::shutdown_send, ignored);
        co_return error_code{};
    }
    void close() {
        error_code ignored;
        s.close(ignored);
    }
    CloseReason failure(const error_code& ec) const {
        return ec == boost::asio::error::operation_aborted ? CloseReason::shutdown
                                                           : CloseReason::local_error;
    }
};

struct TlsEnd {
    TlsStream& s;
    const char* what = "peer";
    static constexpr bool kResetIsAnEnd = false;

    void prepare() {}
    boost::asio::awaitable<std::tuple<error_code, std::size_t>> read(RelayBuffer& b, bool&) {
        // Idle until the peer speaks, holding no buffer.
        if (s.would_wait()) {
            b.release();
            if (auto ec = co_await s.wait_readable()) co_return std::tuple{ec, std::size_t{0}};
        }
        auto buf = b.get();
        co_return co_await s.read_some(boost::asio::buffer(buf.data(), buf.size()));
    }
    boost::asio::awaitable<error_code> write(const char* data, std::size_t n) {
        return s.write_all(boost::asio::buffer(data, n));
    }
    boost::asio::awaitable<error_code> shutdown_send() { return s.shutdown_send(); }
    void close() { s.close(); }
    CloseReason failure(const error_code& ec) const {
        if (ec == boost::asio::error::operation_aborted) return CloseReason::shutdown;
        if (ec == boost::asio::ssl::error::stream_truncated) return CloseReason::peer_truncated;
        if (ec == boost::asio::error::timed_out) return CloseReason::peer_timeout;
        if (is_alert(ec)) return CloseReason::peer_rejected;
        return CloseReason::peer_error;
    }
    // A TLS alert from the peer (OpenSSL reason SSL_AD_REASON_OFFSET + alert
    // code): in TLS 1.3 a client learns that the server refused its certificate
    // this way, on its first read after the handshake.
    static bool is_alert(const error_code& ec) {
        if (ec.category() != boost::asio::error::get_ssl_category()) return false;
        int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
        return reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256;
    }
};

}  // namespace tunneld
